"""The circuit breaker tasks use around calls to a named service.

    payment_gateway = circuit("payment-gateway", fail_max=5, reset_timeout=30)

    @app.task(bind=True, max_retries=5, autoretry_for=(GatewayError,))
    def charge(self, payment_id):
        with payment_gateway:
            gateway.charge(payment_id)

    @payment_gateway            # or as a decorator of the function that calls the service
    def fetch_rates(): ...

Closed: the call goes through and its outcome is counted. Open: the call is refused without
touching the service — inside a job the job waits for the cool-down (monitors/circuits/waiting.py),
elsewhere CircuitOpenError is raised. Inside a job the refusal is Celery's Retry exception, like
`self.retry()`: a task that catches every Exception around the call must re-raise it, or the job
would end as a success and run again when its wait is over. The state is shared by every process through the store
(the database by default, or Redis: JOBWATCH["CIRCUIT_STORE"]).

When the shared store cannot be reached, the breaker fails *open to the fleet, closed to itself*:
calls are decided by a breaker in this process's memory, seeded with the last shared state it
read, with the same policy. A service that was healthy stays callable (an outage of Jobwatch's
store must not stop the business), a circuit that was open stays open for the rest of its
cool-down, and each process still stops calling a service that fails `fail_max` times in a row
for it. The shared store is tried again every STORE_RETRY_SECONDS.
"""

import functools
import logging
import os
import socket
import threading
import time

from celery._state import get_current_task
from celery.exceptions import Ignore, Reject, Retry
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

from monitors.circuits import machine
from monitors.circuits.stores import MemoryStore, StoreUnavailable, shared_store
from monitors.circuits.waiting import (
    CIRCUIT_HEADER,
    CircuitOpenError,
    can_wait,
    wait_for_circuit,
)
from monitors.conf import check_keys, setting
from monitors.recording.events import exception_type

logger = logging.getLogger("monitors.circuits")

STORE_RETRY_SECONDS = 5.0
# Successes of a healthy circuit are added up in the process and written at most this often.
SUCCESS_WRITE_SECONDS = 1.0
# Exceptions that say nothing about the service: the job is being stopped or rescheduled.
NO_VERDICT = (Ignore, Reject, GeneratorExit, KeyboardInterrupt, SystemExit, CircuitOpenError)


class CircuitBreaker:
    def __init__(self, name, *, exclude=(), store=None, wait_in_tasks=True, **policy):
        if not name or not isinstance(name, str):
            raise ValueError("a circuit needs a name: the service it protects, e.g. 'payment-gateway'")
        self.name = name
        # Exceptions (or predicates on an exception) that are the caller's fault, not the
        # service's: a declined card is a success as far as the gateway's health goes.
        self.exclude = tuple(exclude)
        self.wait_in_tasks = wait_in_tasks
        self.code_policy = policy
        machine.Policy(**policy)  # a bad option fails at import, not at the first outage
        self._store = store
        self._fallback = MemoryStore()
        self._shared_down_until = 0.0
        self._last_shared = None
        self._registered = False
        self._local = threading.local()
        self._successes_lock = threading.Lock()
        self._successes, self._last_success_at, self._successes_since = 0, None, None

    # -- configuration ---------------------------------------------------------------------

    @property
    def policy(self):
        """The code's options, overridden by settings (CIRCUIT_DEFAULTS, then CIRCUITS[name])."""
        return machine.Policy(**{**setting("CIRCUIT_DEFAULTS"), **self.code_policy,
                                 **setting("CIRCUITS").get(self.name, {})})

    @property
    def store(self):
        if self._store is not None:
            return self._store
        return shared_store()

    # -- use -------------------------------------------------------------------------------

    def __enter__(self):
        admission = self.before_call()
        self._admissions().append(admission)
        return self

    def __exit__(self, exc_type, exc, traceback):
        admission = self._admissions().pop()
        self.after_call(admission, exc)
        return False

    def __call__(self, func):
        @functools.wraps(func)
        def guarded(*args, **kwargs):
            with self:
                return func(*args, **kwargs)

        guarded.circuit = self
        return guarded

    def call(self, func, *args, **kwargs):
        with self:
            return func(*args, **kwargs)

    def before_call(self):
        """Ask for permission to call the service; refuses (raises) when the circuit is open."""
        policy = self.policy
        admission = self._admit(policy)
        task = get_current_task()
        if task is not None and can_wait(task):
            # The recorder tags the job with the service it calls (the "failing without a
            # breaker" rule leaves such jobs alone).
            setattr(task.request, CIRCUIT_HEADER, self.name)
        if admission.allowed:
            return admission
        if self.wait_in_tasks and task is not None and can_wait(task):
            wait_for_circuit(task, self.name, policy, admission)
        raise CircuitOpenError(self.name, admission.state, admission.retry_in)

    def after_call(self, admission, error=None):
        """Report how the call went; a failure may open the circuit."""
        verdict = self.verdict(error)
        policy = self.policy
        now = timezone.now()
        if verdict is None:
            if admission.trial:
                self._change(policy, lambda state: (None, machine.release(state, admission)))
            return
        failed = verdict is not True
        if not failed and admission.quiet and self._count_success_here(now):
            return
        failure = verdict if failed else None
        kind = exception_type(failure) if failure is not None else ""
        message = str(failure) if failure is not None else ""
        self._change(policy, lambda state: (None, machine.record(state, policy, now, failed, admission, kind, message)))

    def _count_success_here(self, now):
        """A success of a healthy circuit changes nothing shared but the window's call count: add
        it up here and write the sum with the next change, or after SUCCESS_WRITE_SECONDS. The
        common call then costs one read of the shared state, not a locked write. Returns False
        when it is time to write (the caller's write carries the sum)."""
        with self._successes_lock:
            self._successes += 1
            self._last_success_at = now
            if self._successes_since is None:
                self._successes_since = time.monotonic()
            return time.monotonic() - self._successes_since < SUCCESS_WRITE_SECONDS

    def _take_successes(self):
        with self._successes_lock:
            taken = (self._successes, self._last_success_at)
            self._successes, self._last_success_at, self._successes_since = 0, None, None
            return taken

    def verdict(self, error):
        """True: the service worked. An exception: it failed with that. None: no news."""
        if error is None:
            return True
        if isinstance(error, Retry):
            inner = getattr(error, "exc", None)
            return None if inner is None or isinstance(inner, CircuitOpenError) else self.verdict(inner)
        if isinstance(error, NO_VERDICT):
            return None
        for exclusion in self.exclude:
            if isinstance(exclusion, type) and isinstance(error, exclusion):
                return True
            if not isinstance(exclusion, type) and callable(exclusion) and exclusion(error):
                return True
        return error

    def state(self):
        """The current shared state (or this process's, while the store is away)."""
        try:
            return self.store.read(self.name) or machine.State()
        except StoreUnavailable:
            return self._fallback.read(self.name) or machine.State()

    # -- the store, with the local fallback -------------------------------------------------

    def _admit(self, policy):
        now = timezone.now()
        store = self._current_store()
        try:
            return self._admit_from(store, policy, now)
        except StoreUnavailable as error:
            self._shared_store_down(error)
            return self._admit_from(self._fallback, policy, now)

    def _admit_from(self, store, policy, now):
        self._register(store, policy)
        state = store.read(self.name)
        if store is not self._fallback:
            self._last_shared = state
        if state is not None and machine.needs_lock(state, policy, now):
            admission, _, _ = store.update(self.name, policy, self._stamped(lambda s: machine.admit(s, policy, now)))
            return admission
        return machine.admit(state.copy() if state else machine.State(), policy, now)[0]

    def _change(self, policy, change):
        successes, last_success_at = self._take_successes()
        now = timezone.now()

        def with_successes(state):
            # The successes counted here first: they happened before this change.
            machine.add_successes(state, policy, now, successes, last_success_at)
            return change(state)

        store = self._current_store()
        try:
            store.update(self.name, policy, self._stamped(with_successes))
        except StoreUnavailable as error:
            self._shared_store_down(error)
            self._fallback.update(self.name, policy, self._stamped(with_successes))

    def _current_store(self):
        if time.monotonic() < self._shared_down_until:
            return self._fallback
        if self._shared_down_until:
            self._shared_down_until = 0.0
            self._fallback.forget(self.name)
            logger.warning("Circuit %s: the shared store answers again; using the shared state", self.name)
        return self.store

    def _shared_store_down(self, error):
        if self._shared_down_until:
            return  # another thread of this process noticed first
        logger.warning("Circuit %s: %s. Deciding in this process until it is back (checked every %g s), "
                       "starting from the last shared state: %s", self.name, error, STORE_RETRY_SECONDS,
                       self._last_shared.state if self._last_shared else "unknown (closed)")
        self._fallback.seed(self.name, self._last_shared)
        self._shared_down_until = time.monotonic() + STORE_RETRY_SECONDS

    def _register(self, store, policy):
        if not self._registered and store is not self._fallback:
            store.register(self.name, policy)
            self._registered = True

    def _stamped(self, change):
        """Stamp the transitions a change makes with who made them: this process and job."""

        def stamped(state):
            result, transitions = change(state)
            if transitions:
                actor = describe_caller()
                transitions = [machine.Transition(**{**item.__dict__, "actor": item.actor or actor}) for item in transitions]
                for item in transitions:
                    log = logger.warning if item.to_state in machine.REFUSING else logger.info
                    log("Circuit %s: %s → %s (%s)", self.name, item.from_state, item.to_state, item.cause)
            return result, transitions

        return stamped

    def _admissions(self):
        stack = getattr(self._local, "admissions", None)
        if stack is None:
            stack = self._local.admissions = []
        return stack

    def __repr__(self):
        return f"<CircuitBreaker {self.name!r}>"


def describe_caller():
    words = [f"{socket.gethostname()} pid {os.getpid()}"]
    task = get_current_task()
    if task is not None and getattr(task.request, "id", None):
        words.append(f"job {task.name}[{task.request.id}]")
    return ", ".join(words)


def check_settings():
    """Called at start-up with conf.check_settings: CIRCUIT_DEFAULTS and CIRCUITS hold only the
    options a Policy has, and each circuit's make a valid one."""
    configured = getattr(settings, "JOBWATCH", {})
    known = dict.fromkeys(machine.Policy.names())
    check_keys("settings.JOBWATCH['CIRCUIT_DEFAULTS']", configured.get("CIRCUIT_DEFAULTS", {}), known)
    for name, options in configured.get("CIRCUITS", {}).items():
        check_keys(f"settings.JOBWATCH['CIRCUITS'][{name!r}]", options, known)
        try:
            machine.Policy(**{**configured.get("CIRCUIT_DEFAULTS", {}), **options})
        except ValueError as error:
            raise ImproperlyConfigured(f"settings.JOBWATCH['CIRCUITS'][{name!r}]: {error}") from error
