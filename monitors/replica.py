"""Reads on a replica: with JOBWATCH["READ_DATABASE"] naming a read-only alias (a PostgreSQL
streaming replica of the database Jobwatch writes to), the pages, their JSON and the detectors read
the job history from it, so their scans do not load the primary the recorder writes to.

Only the history goes there — the tables the recorder and the sampler write and the pages and
detectors only read (HISTORY below). What Jobwatch reads in order to change it (findings,
incidents, the audit log, circuits, pauses, heartbeats, the periodic tallies) is read where it is
written: a replica a few seconds behind would have two passes open the same finding twice.

Reading from the replica is opted into, never assumed: GET and HEAD requests (ReplicaReadsMiddleware)
and the detectors' task do. Everything else reads the primary — actions (the gate wraps them in
`primary_reads()`: an action must see what it is about to change, not what was true a moment ago),
other requests, the upkeep tasks (they read rows and then delete them on the primary) and any
code of the host project. Writes never go to the replica.

A replica that cannot be reached, or is more than MAX_LAG_SECONDS behind, is not read from: the
history is read from the primary until it is back, and the Overview and /metrics say so.

    settings.py
    DATABASES["replica"] = {..., "CONN_MAX_AGE": 600, "CONN_HEALTH_CHECKS": True}  # no pool: see the README
    DATABASE_ROUTERS = ["monitors.replica.ReadReplicaRouter"]
    MIDDLEWARE = [..., "monitors.replica.ReplicaReadsMiddleware"]
    JOBWATCH = {"READ_DATABASE": "replica"}
"""

import contextlib
import contextvars
import time
from dataclasses import dataclass

from celery import signals
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, connections
from django.db.utils import ConnectionDoesNotExist

from monitors.conf import setting

# What the recorder and the sampler write and the pages and detectors only read (model labels).
HISTORY = frozenset({
    "monitors.jobexecution", "monitors.jobpayload", "monitors.jobtally", "monitors.origintally",
    "monitors.jobhistogram", "monitors.taskcounter", "monitors.queuesample", "monitors.recorderprocess",
    "monitors.circuitevent",
})
# The Celery tasks whose reads of the history go to the replica.
REPLICA_TASKS = frozenset({"jobwatch.run_detectors"})
# Further behind than this, the replica is not read from: the detectors allow for about this much
# delay in the recorder's own writes (orphans.RECORDER_LAG), and the periodic tasks' grace is
# twice it; a page half a minute old is already misleading.
MAX_LAG_SECONDS = 30.0
# How often each process asks the replica how far behind it is (one query), and how long a
# replica that could not be reached is left alone before it is tried again.
CHECK_SECONDS = 5.0
# On the replica: 0 when it has replayed all it received (an idle primary sends nothing, and a
# replica with nothing to replay is not behind); otherwise the age of the last transaction it
# replayed. NULL on a server that is not a standby. After a long idle spell the first write counts
# the whole spell for the moment it takes to replay: at worst, one CHECK_SECONDS on the primary.
LAG_SQL = """
SELECT pg_is_in_recovery(),
       CASE WHEN NOT pg_is_in_recovery() THEN NULL
            WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
            ELSE EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()) END
"""

_replica_reads = contextvars.ContextVar("jobwatch_replica_reads", default=False)
_checked = {}  # alias → (time.monotonic() it is good until, ReplicaState)
_task_tokens = {}  # task id → the token that undoes its replica_reads


@contextlib.contextmanager
def _reads_from_replica(on):
    token = _replica_reads.set(on)
    try:
        yield
    finally:
        _replica_reads.reset(token)


def replica_reads():
    """Within: reads of the history go to the replica (when it is configured and usable)."""
    return _reads_from_replica(True)


def primary_reads():
    """Within (or as a decorator): every read goes to the primary, whatever encloses it (actions,
    /metrics)."""
    return _reads_from_replica(False)


class ReadReplicaRouter:
    """Sends reads of the history to JOBWATCH["READ_DATABASE"] where they were opted into, and
    nothing else anywhere: every other answer is None, left to the project's other routers."""

    def db_for_read(self, model, **hints):
        alias = setting("READ_DATABASE")
        if not alias or not _replica_reads.get() or model._meta.label_lower not in HISTORY:
            return None
        return alias if usable(alias) else None

    def db_for_write(self, model, **hints):
        # Django saves an object where it was read: one read on the replica is saved on the primary.
        alias = setting("READ_DATABASE")
        instance = hints.get("instance")
        if alias and instance is not None and instance._state.db == alias:
            return setting("RECORDER_DATABASE")
        return None

    def allow_migrate(self, db, app_label, **hints):
        # The replica gets its schema from the primary; `migrate --database` on it could only fail.
        alias = setting("READ_DATABASE")
        if alias and db == alias and alias != setting("RECORDER_DATABASE"):
            return False
        return None


class ReplicaReadsMiddleware:
    """GET and HEAD requests — the pages, their fragments and JSON — read the history from the
    replica. A POST reads the primary: what it shows next must include what it just changed."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.method not in ("GET", "HEAD"):
            return self.get_response(request)
        with replica_reads():
            return self.get_response(request)


def task_started(sender=None, task_id=None, **extra):
    if getattr(sender, "name", None) in REPLICA_TASKS:
        _task_tokens[task_id] = _replica_reads.set(True)


def task_ended(sender=None, task_id=None, **extra):
    token = _task_tokens.pop(task_id, None)
    if token is not None:
        with contextlib.suppress(ValueError):  # set in another context (a pool that moved it): nothing to undo
            _replica_reads.reset(token)


def connect_signals():
    signals.task_prerun.connect(task_started, weak=False, dispatch_uid="jobwatch.replica.task_started")
    signals.task_postrun.connect(task_ended, weak=False, dispatch_uid="jobwatch.replica.task_ended")


@dataclass(frozen=True)
class ReplicaState:
    reachable: bool
    standby: bool = False
    lag: float | None = None  # seconds behind the primary; None: not known (not a standby)
    error: str = ""

    @property
    def serves_reads(self):
        return self.reachable and (self.lag is None or self.lag <= MAX_LAG_SECONDS)


def usable(alias):
    """Whether reads may go to `alias` now. The request's connection is made (or, kept from an
    earlier request, checked) here, before the page reads anything: one that fails sends the
    reads to the primary instead of failing the page."""
    entry = _checked.get(alias)
    state = entry[1] if entry and entry[0] > time.monotonic() else check(alias)
    if not state.serves_reads:
        return False
    connection = connection_of(alias)
    # A connection kept open between requests (CONN_MAX_AGE) to a replica that has since restarted
    # or stopped is closed by its health check (CONN_HEALTH_CHECKS), and connected again below.
    with contextlib.suppress(DatabaseError):
        connection.close_if_health_check_failed()
    if connection.connection is None:
        try:
            connection.ensure_connection()
        except DatabaseError as error:
            remember(alias, ReplicaState(reachable=False, error=described(error)))
            return False
    return True


def check(alias):
    """Ask the replica, now, whether it answers and how far behind it is."""
    connection = connection_of(alias)
    try:
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                cursor.execute(LAG_SQL)
                standby, lag = cursor.fetchone()
            else:
                cursor.execute("SELECT 1")
                standby, lag = False, None
        state = ReplicaState(reachable=True, standby=bool(standby), lag=None if lag is None else float(lag))
    except DatabaseError as error:
        with contextlib.suppress(Exception):
            connection.close()  # the next try connects afresh
        state = ReplicaState(reachable=False, error=described(error))
    return remember(alias, state)


def remember(alias, state):
    _checked[alias] = (time.monotonic() + CHECK_SECONDS, state)
    return state


def replica_lag(alias=None):
    """Seconds the replica is behind the primary; None when it is not a standby or cannot be reached."""
    alias = alias or setting("READ_DATABASE")
    return check(alias).lag if alias else None


def replica_status():
    """For the Overview and /metrics: None when no replica is configured."""
    alias = setting("READ_DATABASE")
    if not alias:
        return None
    state = check(alias)
    return {"alias": alias, "reachable": state.reachable, "standby": state.standby, "lag_seconds": state.lag,
            "reads_from": alias if state.serves_reads else setting("RECORDER_DATABASE"),
            "max_lag_seconds": MAX_LAG_SECONDS, "error": state.error}


def connection_of(alias):
    try:
        return connections[alias]
    except ConnectionDoesNotExist:
        raise ImproperlyConfigured(f"JOBWATCH['READ_DATABASE'] is {alias!r}, which is not in DATABASES") from None


def described(error):
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"[:300]
