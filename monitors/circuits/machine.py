"""The circuit breaker's state machine, as pure functions over a `State`.

No I/O here: a store (stores.py) reads a circuit's State, hands it to these functions under its
lock, and writes it back, so every process applies the same rules to the same shared state.

    closed ──(fail_max consecutive failures, or failure rate ≥ threshold over the window
              with at least minimum_calls calls)──▶ open
    open ──(reset_timeout over; the next call takes a trial permit)──▶ half-open
    half-open ──(trial_calls trials succeeded)──▶ closed
    half-open ──(a trial failed)──▶ open (a new cool-down)
    forced open / forced closed: set by an operator, left only by an operator (reset or force).

The names and defaults follow the breakers people know: `fail_max`, `reset_timeout` (pybreaker),
`failure_rate_threshold`, `minimum_calls` (resilience4j's minimumNumberOfCalls; Hystrix calls it
requestVolumeThreshold, 20), a time-based sliding `window` split into buckets, and `trial_calls`
(resilience4j's permittedNumberOfCallsInHalfOpenState).
"""

import random
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timedelta

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
FORCED_OPEN, FORCED_CLOSED = "forced_open", "forced_closed"
STATES = (CLOSED, OPEN, HALF_OPEN, FORCED_OPEN, FORCED_CLOSED)
# States in which calls are refused (half-open refuses calls beyond its trial permits).
REFUSING = (OPEN, FORCED_OPEN)
WINDOW_BUCKETS = 10
LAST_ERROR_LENGTH = 2000


@dataclass(frozen=True)
class Policy:
    """How one circuit decides. Every number can be set per circuit in code, or in settings
    (JOBWATCH["CIRCUITS"]), which win so that operators can tune without a deploy."""

    fail_max: int = 5  # consecutive failures that open it
    failure_rate_threshold: float = 50.0  # percent of failed calls over the window; 0 turns the rule off
    minimum_calls: int = 20  # calls in the window before the rate counts
    window: float = 60.0  # seconds
    reset_timeout: float = 60.0  # seconds open before trial calls are let through
    trial_calls: int = 1  # trial calls let through while half-open; all must succeed to close
    trial_timeout: float = 60.0  # a trial not reported within this is presumed dead, its permit freed
    wait_jitter: float = 0.2  # jobs waiting on the circuit retry up to this fraction of reset_timeout late
    max_wait: float = 86_400.0  # a job gives up waiting (and fails) after this many seconds

    def __post_init__(self):
        for name in ("fail_max", "minimum_calls", "trial_calls"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"circuit {name} must be a whole number ≥ 1, not {value!r}")
        for name in ("window", "reset_timeout", "trial_timeout", "max_wait"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"circuit {name} must be a positive number of seconds, not {value!r}")
        if not 0 <= self.failure_rate_threshold <= 100:
            raise ValueError(f"circuit failure_rate_threshold is a percentage, not {self.failure_rate_threshold!r}")
        if not 0 <= self.wait_jitter <= 10:
            raise ValueError(f"circuit wait_jitter is a fraction of reset_timeout, not {self.wait_jitter!r}")

    @classmethod
    def names(cls):
        return [item.name for item in fields(cls)]

    def as_dict(self):
        return asdict(self)


@dataclass
class State:
    """A circuit's shared state. Times are aware datetimes, except `trials` and `window` (epoch
    seconds, kept as plain numbers because they are stored as JSON)."""

    state: str = CLOSED
    changed_at: datetime | None = None
    opened_at: datetime | None = None
    consecutive_failures: int = 0
    trial_successes: int = 0
    trials: list = field(default_factory=list)
    window: list = field(default_factory=list)
    open_count: int = 0
    last_error_type: str = ""
    last_error: str = ""
    last_failure_at: datetime | None = None
    last_success_at: datetime | None = None
    forced_by: str = ""

    @classmethod
    def names(cls):
        return [item.name for item in fields(cls)]

    def copy(self):
        return replace(self, trials=list(self.trials), window=[list(bucket) for bucket in self.window])

    def window_counts(self, policy, now):
        """(calls, failures) within the last `policy.window` seconds."""
        start = now.timestamp() - policy.window
        calls = failures = 0
        for bucket_start, bucket_calls, bucket_failures in self.window:
            if bucket_start > start - bucket_width(policy):
                calls += bucket_calls
                failures += bucket_failures
        return calls, failures

    def cool_down_left(self, policy, now):
        if self.state != OPEN or self.opened_at is None:
            return 0.0
        return max(0.0, (self.opened_at + timedelta(seconds=policy.reset_timeout) - now).total_seconds())


@dataclass(frozen=True)
class Transition:
    from_state: str
    to_state: str
    cause: str
    at: datetime
    consecutive_failures: int = 0
    window_calls: int = 0
    window_failures: int = 0
    error_type: str = ""
    error: str = ""
    actor: str = ""


@dataclass(frozen=True)
class Admission:
    """The answer to "may I call the service now?"."""

    allowed: bool
    state: str
    trial: bool = False  # the call holds one of the half-open trial permits
    retry_in: float = 0.0  # when refused: seconds until a call could be let through
    trial_token: float | None = None  # identifies the permit, to release exactly it
    # Closed with no failure outstanding: a success here changes nothing but the window's counts,
    # which the breaker may then add up in the process and write later (see add_successes).
    quiet: bool = False


def bucket_width(policy):
    return max(policy.window / WINDOW_BUCKETS, 1.0)


def needs_lock(state, policy, now):
    """Would `admit` change this state? Only then must a store take its write lock; the usual
    answers (closed: go; open and cooling down: wait) are read-only."""
    if state.state == OPEN:
        return state.cool_down_left(policy, now) <= 0
    return state.state == HALF_OPEN


def admit(state, policy, now):
    """Decide whether a call may go to the service, updating `state` (trial permits, open →
    half-open). Returns (Admission, [Transition])."""
    transitions = []
    if state.state in (CLOSED, FORCED_CLOSED):
        return Admission(True, state.state, quiet=state.consecutive_failures == 0), transitions
    if state.state == FORCED_OPEN:
        return Admission(False, state.state, retry_in=policy.reset_timeout), transitions
    if state.state == OPEN:
        left = state.cool_down_left(policy, now)
        if left > 0:
            return Admission(False, OPEN, retry_in=left), transitions
        transitions.append(_move(state, HALF_OPEN, now, policy, f"cool-down of {policy.reset_timeout:g} s over; letting {plural(policy.trial_calls, 'trial call')} through"))
        state.trials = []
        state.trial_successes = 0
    # Half-open: a permit per trial call, across every process; a permit whose holder never
    # reported (it crashed) is freed after trial_timeout.
    moment = now.timestamp()
    state.trials = [started for started in state.trials if started > moment - policy.trial_timeout]
    if len(state.trials) + state.trial_successes >= policy.trial_calls:
        return Admission(False, HALF_OPEN, retry_in=trial_retry_delay(policy)), transitions
    token = moment
    while token in state.trials:  # two permits taken within the clock's resolution
        token += 1e-6
    state.trials.append(token)
    return Admission(True, HALF_OPEN, trial=True, trial_token=token), transitions


def trial_retry_delay(policy):
    """How long a call refused while trials run should wait: the trials' verdict is near."""
    return max(1.0, min(policy.reset_timeout, policy.trial_timeout) / 4)


def record(state, policy, now, failed, admission, error_type="", error=""):
    """Count a call's outcome. Returns [Transition]."""
    _count_in_window(state, policy, now, failed)
    if failed:
        state.consecutive_failures += 1
        state.last_failure_at = now
        state.last_error_type = error_type
        state.last_error = error[:LAST_ERROR_LENGTH]
    else:
        state.consecutive_failures = 0
        state.last_success_at = now
    was_trial = _release(state, admission)

    if state.state == HALF_OPEN and was_trial:
        if failed:
            return [_open(state, policy, now, "a trial call failed", error_type, error)]
        state.trial_successes += 1
        if state.trial_successes >= policy.trial_calls:
            transition = _move(state, CLOSED, now, policy, f"{plural(state.trial_successes, 'trial call')} succeeded")
            state.trial_successes = 0
            state.trials = []
            state.window = []  # the outage's failures must not count against the recovered service
            return [transition]
        return []
    if state.state == CLOSED and failed:
        if state.consecutive_failures >= policy.fail_max:
            return [_open(state, policy, now, f"{state.consecutive_failures} consecutive failures", error_type, error)]
        calls, failures = state.window_counts(policy, now)
        rate = 100.0 * failures / calls if calls else 0.0
        if policy.failure_rate_threshold and calls >= policy.minimum_calls and rate >= policy.failure_rate_threshold:
            cause = f"{rate:.0f} % of {calls} calls failed in {policy.window:g} s"
            return [_open(state, policy, now, cause, error_type, error)]
    return []


def add_successes(state, policy, now, count, last_success_at):
    """Fold successes counted in a process since its last write into the shared window. They
    happened before `now`, so they neither reset a failure run that began since nor close
    anything: only the failure rate's denominator and the last success time move."""
    if count <= 0:
        return []
    _count_in_window(state, policy, now, failed=False, calls=count)
    if state.last_success_at is None or last_success_at > state.last_success_at:
        state.last_success_at = last_success_at
    return []


def release(state, admission):
    """A call that ended without a verdict on the service (the worker shut down, the task was
    retried for another reason): give its trial permit back."""
    _release(state, admission)
    return []


def force(state, policy, now, to_state, actor, reason=""):
    """An operator's change: forced open, forced closed, or reset (to closed, counters cleared)."""
    if to_state not in (FORCED_OPEN, FORCED_CLOSED, CLOSED):
        raise ValueError(f"a circuit can be forced open, forced closed or reset, not set to {to_state!r}")
    verb = {FORCED_OPEN: "forced open", FORCED_CLOSED: "forced closed", CLOSED: "reset"}[to_state]
    cause = f"{verb} by {actor}" + (f": {reason}" if reason else "")
    transition = _move(state, to_state, now, policy, cause, actor=actor)
    state.forced_by = actor if to_state != CLOSED else ""
    state.trials = []
    state.trial_successes = 0
    if to_state == CLOSED:
        state.consecutive_failures = 0
        state.window = []
        state.opened_at = None
    elif to_state == FORCED_OPEN:
        state.opened_at = now
    return [transition]


def wait_delay(policy, admission, rng=random):
    """Seconds a job refused by the circuit should wait before it tries again: what is left of
    the cool-down plus jitter, so that the waiting jobs do not all come back at the same moment
    (one of them takes the trial permit; the rest find the circuit half-open and wait a little
    more)."""
    return admission.retry_in + rng.uniform(0, policy.wait_jitter * policy.reset_timeout)


def plural(count, noun):
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _open(state, policy, now, cause, error_type, error):
    transition = _move(state, OPEN, now, policy, cause, error_type=error_type, error=error)
    state.opened_at = now
    state.open_count += 1
    state.trials = []
    state.trial_successes = 0
    return transition


def _move(state, to_state, now, policy, cause, error_type=None, error=None, actor=""):
    calls, failures = state.window_counts(policy, now)
    transition = Transition(
        from_state=state.state, to_state=to_state, cause=cause, at=now,
        consecutive_failures=state.consecutive_failures, window_calls=calls, window_failures=failures,
        error_type=state.last_error_type if error_type is None else error_type,
        error=(state.last_error if error is None else error)[:LAST_ERROR_LENGTH], actor=actor,
    )
    state.state = to_state
    state.changed_at = now
    if to_state != FORCED_OPEN and to_state != FORCED_CLOSED:
        state.forced_by = ""
    return transition


def _release(state, admission):
    if admission is None or not admission.trial or admission.trial_token is None:
        return False
    if admission.trial_token in state.trials:
        state.trials.remove(admission.trial_token)
        return True
    # The permit expired (trial_timeout) or the circuit moved on; a late verdict still counts
    # while the circuit is half-open, since it is real news about the service.
    return state.state == HALF_OPEN


def _count_in_window(state, policy, now, failed, calls=1):
    width = bucket_width(policy)
    moment = now.timestamp()
    start = moment - moment % width
    state.window = [bucket for bucket in state.window if bucket[0] > moment - policy.window - width]
    if state.window and state.window[-1][0] == start:
        state.window[-1][1] += calls
        state.window[-1][2] += int(failed)
    else:
        state.window.append([start, calls, int(failed)])
