"""Job events built from Celery's signals: plain dicts of JobExecution columns.

Every builder reads only what the signal hands it; none touches the database or the broker.
"""

import os
import time
import traceback as tracebacks
from datetime import UTC, datetime, timedelta

from django.utils.dateparse import parse_datetime
from kombu.utils.json import dumps

from monitors.conf import setting
from monitors.recording.payload import PayloadCleaner, measure, shorten
from monitors.recording.targets import failure_target

# `progress` = attempt * STAGES + stage orders one job's events without trusting clocks. The
# attempt is Celery's retries plus the times the job was put back to wait for an open circuit
# (monitors/circuits/waiting.py), which re-runs the same task id without counting a retry.
STAGES = 4
STAGE = {"enqueued": 0, "received": 1, "started": 2}
FINISHED_STAGE = 3
PUBLISHED_HEADER = "jobwatch_published_at"
# When the job was first published, in whole microseconds since the epoch: stamped once and kept
# by every republish of the same job (retries, circuit waits), so that every event of the job —
# from the publisher, the worker, the pool process — names the same `enqueued_at`. On PostgreSQL
# that time is the key of the day partition the job's row lives in (monitors/partitions.py), and
# an event naming another time would write a second row. (PUBLISHED_HEADER is re-stamped by each
# republish: it measures how long this delivery waited.)
ENQUEUED_HEADER = "jobwatch_enqueued_at"
# Set by the worker's main process on receipt, read by the pool process (see signals.task_received).
RECEIVED_KEY = "jobwatch_received_at"
# Message headers set by monitors/circuits/waiting.py (kept in sync there; not imported, so that
# recording does not load the circuit breaker).
CIRCUIT_HEADER = "jobwatch_circuit"
WAITS_HEADER = "jobwatch_circuit_waits"
# Set by monitors/actions/replay.py on a replayed job's message: the task id it replays.
REPLAY_HEADER = "jobwatch_replay_of"
# An event may carry a failed job's full arguments, for JobPayload (see full_payload); the
# writer stores them apart, the execution table never sees them.
PAYLOAD_KEY = "_payload"
# An event may carry counts for the Prometheus counters (TaskCounter), the per-minute tallies
# (JobTally) and the time histograms (JobHistogram): [(metric, name, hostname, queue, exception,
# seconds)], counted once per job event by the handler that knows it happened. `seconds` is the
# runtime of a finished job, the queue wait of a started one (see queue_wait), else None.
COUNTS_KEY = "_counts"
FINAL_METRIC = {"succeeded": "succeeded", "failed": "failed", "retried": "retried", "waiting": "retried",
                "revoked": "revoked", "rejected": "rejected"}


def counted(event, metric, hostname, queue="", exception="", seconds=None):
    event.setdefault(COUNTS_KEY, []).append(
        (metric, event.get("task_name") or "", hostname or "", queue or "", exception or "", seconds))
    return event


def queue_wait(request, started):
    """Seconds this delivery waited for a worker: from its publish (the header every publish
    stamps, a retry's republish included) or, for a job told to wait, from its eta — the time
    it was meant to wait is not queue wait — to `started` (epoch seconds), never below zero
    (clocks of two hosts). None when it cannot be told: a message published without Jobwatch's
    header or with one that is not a plausible time, and a redelivery (a lost worker's job, a
    visibility timeout), whose header is its first publish's."""
    if ((getattr(request, "delivery_info", None) or {}).get("redelivered")):
        return None
    try:
        published = float(getattr(request, PUBLISHED_HEADER, None))
    except (TypeError, ValueError, OverflowError):
        return None
    if not (started - MAX_QUEUE_WAIT <= published <= started + MAX_CLOCK_SKEW):  # NaN fails too
        return None
    eta = as_datetime(getattr(request, "eta", None))
    ready = max(published, eta.timestamp()) if eta is not None else published
    return max(started - ready, 0.0)


# A publish header further back than this, or ahead of the worker's clock by more than that, is
# not a time this job was published at.
MAX_QUEUE_WAIT = 400 * 86400
MAX_CLOCK_SKEW = 3600


# task_postrun's `state` → our state.
POSTRUN_STATES = {
    "SUCCESS": "succeeded",
    "FAILURE": "failed",
    "RETRY": "retried",
    "REJECTED": "rejected",
    "REVOKED": "revoked",
    "IGNORED": "succeeded",
}


def now():
    return datetime.now(UTC)


def progress(attempt, state):
    return (attempt or 0) * STAGES + STAGE.get(state, FINISHED_STAGE)


def as_count(value):
    try:
        return max(int(value or 0), 0)
    except (TypeError, ValueError):
        return 0


def attempt_of(retries, waits):
    return as_count(retries) + as_count(waits)


def request_attempt(request):
    """The attempt a running task's request stands for."""
    return attempt_of(getattr(request, "retries", 0), getattr(request, WAITS_HEADER, 0))


def as_datetime(value):
    if not value:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    try:
        parsed = parse_datetime(str(value))
    except ValueError:
        return None
    if parsed is not None and parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def enqueued_micros(source):
    """The ENQUEUED_HEADER a message carries, from its headers (a dict), a worker's Request (its
    request_dict) or a running task's request (headers become attributes); None when it carries
    none, or something that is not a whole number of microseconds in a plausible range."""
    if isinstance(source, dict):
        value = source.get(ENQUEUED_HEADER)
    else:
        request_dict = getattr(source, "request_dict", None)
        value = request_dict.get(ENQUEUED_HEADER) if isinstance(request_dict, dict) else getattr(source, ENQUEUED_HEADER, None)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**62:
        return None
    return value


def micros_datetime(micros):
    """Exact: the same integer gives the same time in every process (a float would round)."""
    return EPOCH + timedelta(microseconds=micros)


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def job_key(source):
    """{"enqueued_at": …} for an event of the job whose message `source` describes, when the
    message says when the job was first published; {} otherwise (the writer then finds the row
    the job already has, see monitors/recording/upsert.py)."""
    micros = enqueued_micros(source)
    return {} if micros is None else {"enqueued_at": micros_datetime(micros)}


def epoch_datetime(value):
    try:
        return datetime.fromtimestamp(float(value), UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def message_fields(body, headers):
    """(task_id, task_name, args, kwargs, retries, eta, expires, parent, root, group) of a message,
    Celery protocol 2 (headers + (args, kwargs, embed) body) or protocol 1 (all in the body)."""
    headers = headers or {}
    if "task" in headers and "id" in headers:
        args, kwargs = (body[0], body[1]) if isinstance(body, (list, tuple)) and len(body) >= 2 else ((), {})
        source = headers
    else:
        source = body if isinstance(body, dict) else {}
        args, kwargs = source.get("args", ()), source.get("kwargs", {})
    return {
        "task_id": source.get("id"),
        "task_name": source.get("task") or "",
        "args": args,
        "kwargs": kwargs,
        "retries": as_count(source.get("retries")),
        "waits": as_count(source.get(WAITS_HEADER) or headers.get(WAITS_HEADER)),
        "circuit": str(source.get(CIRCUIT_HEADER) or headers.get(CIRCUIT_HEADER) or "")[:200],
        "replay_of": str(source.get(REPLAY_HEADER) or headers.get(REPLAY_HEADER) or "")[:255],
        "eta": as_datetime(source.get("eta")),
        "expires": as_datetime(source.get("expires")),
        "parent_id": source.get("parent_id") or "",
        "root_id": source.get("root_id") or "",
        "group_id": source.get("group") or source.get("taskset") or "",
    }


def cleaned_arguments(args, kwargs):
    cleaned_args, cleaned_kwargs, _, complete = PayloadCleaner.from_settings().clean(args, kwargs, measure=False)
    size, digest = measure(args, kwargs)
    return {"args": cleaned_args, "kwargs": cleaned_kwargs, "payload_size": size, "payload_complete": complete,
            "payload_hash": digest}


def enqueued_event(fields, exchange, routing_key, declare, properties, published_at):
    event = {
        "task_id": fields["task_id"],
        "task_name": fields["task_name"],
        "state": "enqueued",
        "progress": progress(attempt_of(fields["retries"], fields["waits"]), "enqueued"),
        "retries": fields["retries"],
        "circuit_waits": fields["waits"],
        "queue": queue_name(exchange, routing_key, declare),
        "exchange": exchange or "",
        "routing_key": routing_key or "",
        "priority": (properties or {}).get("priority"),
        "eta": fields["eta"],
        "expires": fields["expires"],
        "parent_id": fields["parent_id"],
        "root_id": fields["root_id"],
        "group_id": fields["group_id"],
        "replay_of": fields["replay_of"],
        "enqueued_at": published_at,
        "updated_at": published_at,
    }
    event.update(cleaned_arguments(fields["args"], fields["kwargs"]))
    return event


def queue_name(exchange, routing_key, declare):
    for queue in declare or ():
        name = getattr(queue, "name", None)
        if name:
            return name
    return routing_key or ""


def received_event(request):
    """A job that will wait inside the worker for its eta. One put back by an open circuit is
    "waiting" (on that circuit) until it starts."""
    delivery = request.delivery_info or {}
    request_dict = request.request_dict or {}
    retries = as_count(request_dict.get("retries"))
    waits = as_count(request_dict.get(WAITS_HEADER))
    circuit = str(request_dict.get(CIRCUIT_HEADER) or "")[:200]
    moment = epoch_datetime(request_dict.get(RECEIVED_KEY)) or now()
    return {
        "task_id": request.id,
        "task_name": request.name or "",
        "state": "waiting" if waits and circuit else "received",
        "progress": progress(retries + waits, "received"),
        "retries": retries,
        "circuit": circuit,
        "circuit_waits": waits,
        "queue": delivery.get("routing_key") or "",
        "received_at": moment,
        "worker": request.hostname or "",
        "updated_at": moment,
        **job_key(request),
    }


def started_event(task_id, task, args, kwargs):
    request = task.request
    delivery = request.delivery_info or {}
    retries = request.retries or 0
    moment = now()
    event = {
        "task_id": task_id,
        "task_name": task.name or "",
        "state": "started",
        "progress": progress(request_attempt(request), "started"),
        "retries": retries,
        "queue": delivery.get("routing_key") or "",
        "started_at": moment,
        "received_at": epoch_datetime(getattr(request, RECEIVED_KEY, None)),
        "worker": request.hostname or "",
        "worker_pid": os.getpid(),
        "parent_id": request.parent_id or "",
        "root_id": request.root_id or "",
        "group_id": request.group or "",
        "updated_at": moment,
        **job_key(request),
    }
    event.update(cleaned_arguments(args, kwargs))
    return event


def finished_event(task_id, task, state, started_monotonic, retval, failure):
    request = task.request
    retries = request.retries or 0
    moment = now()
    event = {
        "task_id": task_id,
        "task_name": task.name or "",
        "state": state,
        "progress": progress(request_attempt(request), state),
        "retries": retries,
        # The service this run called through a circuit breaker, or waits on (set by the breaker).
        "circuit": str(getattr(request, CIRCUIT_HEADER, None) or "")[:200],
        "finished_at": moment,
        "worker": request.hostname or "",
        "worker_pid": os.getpid(),
        "updated_at": moment,
        **job_key(request),
    }
    if started_monotonic is not None:
        event["runtime"] = time.monotonic() - started_monotonic
    if state == "succeeded" and retval is not None:
        event["result"] = shorten(repr(retval), setting("RESULT_MAX_LENGTH"))
    if failure:
        event.update(failure, error_progress=event["progress"])
    return event


def full_payload(args, kwargs):
    """A failed job's arguments as JSON, when what the execution table keeps of them is not the
    whole of them (redacted or truncated): replay needs the original. None when it does not."""

    _, _, _, complete = PayloadCleaner.from_settings().clean(args, kwargs, measure=False)
    if complete:
        return None
    try:
        return dumps([list(args or ()), dict(kwargs or {})])
    except (TypeError, ValueError):
        return None  # not JSON-serialisable: the job was not sent as JSON either


def failure_fields(exception, einfo):
    traceback = ""
    if einfo is not None:
        traceback = shorten(str(getattr(einfo, "traceback", "") or ""), setting("TRACEBACK_MAX_LENGTH"))
    return {
        "exception_type": exception_type(exception),
        "exception_message": shorten(str(exception), setting("TRACEBACK_MAX_LENGTH")),
        "traceback": traceback,
    }


def target_fields(exception, traceback=None):
    """Who the failure came from (monitors/recording/targets.py): read while the frames the
    error went through are alive, in the task_failure and task_retry handlers."""
    target, status, kind = failure_target(exception, traceback)
    return {"error_target": target, "error_status": status, "error_kind": kind}


def own_traceback(exception):
    """The exception's traceback as text, its causes included: Celery formats its picklable
    stand-in's, which has neither the real type nor the causes."""
    try:
        text = "".join(tracebacks.format_exception(exception))
    except Exception:
        return ""
    return shorten(text, setting("TRACEBACK_MAX_LENGTH"))


def original_failure(failure, original):
    """A failure recorded from Celery's stand-in, told again from the error itself (task_postrun's
    return value). Its frames are cleared by then; what its objects say is not."""
    told = failure_fields(original, None)
    told["traceback"] = own_traceback(original) or failure.get("traceback", "")
    found = target_fields(original)
    for name, value in found.items():
        told[name] = value if value not in ("", None) else failure.get(name, value)
    return {**failure, **told}


def exception_type(exception):
    cls = type(exception)
    module = cls.__module__
    return cls.__qualname__ if module in ("builtins", None) else f"{module}.{cls.__qualname__}"


def lost_event(task_id, task_name, attempt, state, reason, exception=None, einfo=None, message=None):
    """A terminal event the worker's main process reports (revoked, rejected, lost, timed out);
    `message`: its headers, a Request or a task's request, when the handler has one."""
    moment = now()
    event = {
        **(job_key(message) if message is not None else {}),
        "task_id": task_id,
        "task_name": task_name or "",
        "state": state,
        "progress": progress(attempt, state),
        "finished_at": moment,
        "updated_at": moment,
        "exception_message": reason,
    }
    if exception is not None:
        event.update(failure_fields(exception, einfo))
    event["error_progress"] = event["progress"]
    return event
