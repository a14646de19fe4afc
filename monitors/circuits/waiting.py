"""Jobs and open circuits: a job whose service's circuit is open is put back on its queue to run
again when the cool-down is over, without calling the service and without using up a retry.

Celery's own `Task.retry` would do the re-enqueue but count it as a retry (`request.retries` + 1,
checked against `max_retries`), so an outage would eat the retry budget meant for real failures.
Here the job is re-published with the same task id, the same `retries`, and a header counting its
waits; the worker records it as "waiting" (monitors/recording reads the same headers), and the
execution table shows which circuit it waits on.
"""

import time

from celery.exceptions import Retry

from monitors.circuits.machine import wait_delay

# Message headers (they become attributes of the task's request on the worker).
CIRCUIT_HEADER = "jobwatch_circuit"  # the circuit the job waits on
WAITS_HEADER = "jobwatch_circuit_waits"  # how many times it was put back to wait
WAITING_SINCE_HEADER = "jobwatch_waiting_since"  # epoch of its first wait, for max_wait


class CircuitOpenError(Exception):
    """A call was refused because the service's circuit is open (or half-open with its trial
    calls taken). Outside a task — or inside one that has waited longer than `max_wait` — this
    reaches the caller; inside a task the job waits instead (see wait_for_circuit)."""

    def __init__(self, name, state, retry_in, message=None):
        self.name = name
        self.state = state
        self.retry_in = retry_in
        super().__init__(message or f"circuit {name!r} is {state.replace('_', '-')}: calls refused "
                                    f"for about {retry_in:.1f} s more")

    def __reduce__(self):
        # Picklable, so that Celery's Retry keeps this error rather than a stand-in: the recorder
        # tells a job put back to wait from a failed attempt by this error's type and name.
        return type(self), (self.name, self.state, self.retry_in, str(self))


def waits_of(request):
    try:
        return int(getattr(request, WAITS_HEADER, 0) or 0)
    except (TypeError, ValueError):
        return 0


def can_wait(task):
    """Only a job a worker runs can be put back on its queue; not a direct call or an eager one."""
    request = getattr(task, "request", None)
    return request is not None and request.id and not request.called_directly and not request.is_eager


def wait_for_circuit(task, name, policy, admission):
    """Put the running job back to wait for circuit `name`; raises celery's Retry, which makes
    the worker end this run as a retry without counting it as a failure of the job."""
    request = task.request
    since = _float(getattr(request, WAITING_SINCE_HEADER, None)) or time.time()
    waited = time.time() - since
    if waited > policy.max_wait:
        raise CircuitOpenError(name, admission.state, admission.retry_in,
                               f"circuit {name!r} still {admission.state.replace('_', '-')} after this job "
                               f"waited {waited:.0f} s (max_wait {policy.max_wait:g} s): giving up")
    delay = wait_delay(policy, admission)
    headers = {
        **(request.headers or {}),
        CIRCUIT_HEADER: name,
        WAITS_HEADER: waits_of(request) + 1,
        WAITING_SINCE_HEADER: since,
    }
    signature = task.signature_from_request(request, countdown=delay, retries=request.retries, headers=headers)
    signature.apply_async()
    refusal = CircuitOpenError(name, admission.state, admission.retry_in)
    raise Retry(f"waiting {delay:.1f} s for circuit {name!r}", exc=refusal, when=delay, sig=signature)


def _float(value):
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None
