"""Where circuits keep their shared state: the database (default), Redis, or — as the fallback
while the shared store is unreachable — this process's memory.

Every store offers the same three operations:

- `read(name)` → State or None: no lock; the common answers (closed: go, open: wait) need none;
- `update(name, policy, change)`: read-modify-write under the store's lock, so that across every
  worker process and machine only one caller at a time turns open into half-open or takes the
  last trial permit; `change(state)` returns (result, [Transition]);
- `register(name, policy)`: make the circuit known to the monitor before anything happens to it.

Transitions are written to CircuitEvent (and the Circuit row) in the database, whichever store
holds the state: with the database store in the same transaction as the change; with Redis just
after it, on a best-effort basis (a transition Redis saw while the database was down is logged,
not lost from the breaker's behaviour).

The models are imported inside the functions that use them: a breaker (and so this module) is
made when the host's task modules are imported, which a Celery app may do before Django's apps
are ready.
"""

import json
import logging
import os
import threading
import weakref
from datetime import UTC, datetime

from django.db import DatabaseError
from django.db.models import Q
from django.db.models.constants import OnConflict
from django.db.models.sql import InsertQuery, UpdateQuery
from django.db.models.sql.constants import CURSOR
from django.utils import timezone

from monitors.circuits.machine import State
from monitors.conf import setting
from monitors.db import close_quietly, private_connection, write_transaction

logger = logging.getLogger("monitors.circuits")

STATE_FIELDS = State.names()


class StoreUnavailable(Exception):
    """The shared store could not be reached or answered with an error."""


# Every private connection the database stores opened, so that they can be closed together (test
# teardown, a worker shutting down).
_connections = weakref.WeakSet()


def close_connections():
    for connection in list(_connections):
        close_quietly(connection)


class DatabaseStore:
    """State in the Circuit table, changed under a row lock (SELECT … FOR UPDATE on PostgreSQL,
    BEGIN IMMEDIATE on SQLite), on a connection of Jobwatch's own (monitors/db.py) so that a
    task's transaction can neither hold the lock nor roll a failure count back."""

    kind = "database"

    def __init__(self, alias="default"):
        self.alias = alias
        # One connection per thread: a thread pool's calls do not queue behind each other.
        self._local = threading.local()

    def _connection(self):
        connection = getattr(self._local, "connection", None)
        # A forked child (the prefork pool) must not talk over its parent's socket.
        if connection is None or self._local.pid != os.getpid():
            connection = self._local.connection = private_connection(self.alias, "circuits", connect_timeout=3)
            self._local.pid = os.getpid()
            _connections.add(connection)
        return connection

    def read(self, name):
        return self._run(lambda connection: self._select(connection, name, lock=False))

    def update(self, name, policy, change):
        def read_modify_write(connection):
            # Breaker state is soft: not worth an fsync per call (see write_transaction).
            with write_transaction(connection, durable=False):
                state = self._select(connection, name, lock=True)
                if state is None:
                    self._insert(connection, name, policy)
                    state = self._select(connection, name, lock=True)
                result, transitions = change(state)
                self._write(connection, name, state, policy)
                insert_events(connection, name, transitions)
            return result, transitions, state

        return self._run(read_modify_write)

    def register(self, name, policy):
        def register(connection):
            self._insert(connection, name, policy)
            update_policy(connection, name, policy)

        self._run(register)

    def mirror(self, name, state, policy, transitions):
        """Copy a state held elsewhere (Redis) and its transitions into the database."""

        def mirror(connection):
            self._insert(connection, name, policy)
            self._write(connection, name, state, policy)
            insert_events(connection, name, transitions)

        self._run(mirror)

    def _run(self, work):
        """Run `work(connection)`. A connection that has been idle may have been closed by the
        server since (a restart, an idle timeout): one failure on a used connection is retried
        once on a new one before the store counts as unreachable."""
        connection = self._connection()
        used = connection.connection is not None
        try:
            return work(connection)
        except DatabaseError as error:
            self._forget_connection()
            if not used:
                raise StoreUnavailable(f"circuit store (database {self.alias!r}): {error}") from error
        try:
            return work(self._connection())
        except DatabaseError as error:
            self._forget_connection()
            raise StoreUnavailable(f"circuit store (database {self.alias!r}): {error}") from error

    def names(self):
        from monitors.models import Circuit  # see the module's docstring

        return list(Circuit.objects.using(self.alias).order_by("name").values_list("name", flat=True))

    def _forget_connection(self):
        close_quietly(self._connection())
        self._local.connection = None

    def _select(self, connection, name, lock):
        # The read is on every call's path: its SQL is compiled once per connection, and Django's
        # compiler only converts the row (JSON, datetimes) as the ORM would.
        compiled = self._compiled(connection, lock)
        sql, compiler = compiled
        with connection.cursor() as cursor:
            cursor.execute(sql, [name])
            rows = cursor.fetchall()
        for row in compiler.results_iter(results=[rows]):
            return State(**dict(zip(STATE_FIELDS, row, strict=True)))
        return None

    def _compiled(self, connection, lock):
        cache = getattr(self._local, "compiled", None)
        if cache is None or cache[0] is not connection:
            cache = self._local.compiled = (connection, {})
        if lock not in cache[1]:
            from monitors.models import Circuit  # see the module's docstring

            queryset = Circuit.objects.filter(name="").values_list(*STATE_FIELDS)
            if lock and connection.features.has_select_for_update:
                queryset = queryset.select_for_update()
            compiler = queryset.query.get_compiler(connection=connection)
            sql, params = compiler.as_sql()
            if list(params) != [""]:
                raise AssertionError(f"the circuit read takes one parameter, the name: {params!r}")
            cache[1][lock] = (sql, compiler)
        return cache[1][lock]

    def _insert(self, connection, name, policy):
        from monitors.models import Circuit  # see the module's docstring

        row = Circuit(name=name, policy=policy.as_dict(), updated_at=timezone.now())
        query = InsertQuery(Circuit, on_conflict=OnConflict.IGNORE)
        names = [item.name for item in Circuit._meta.concrete_fields if item.name != "id"]
        query.insert_values([Circuit._meta.get_field(item) for item in names], [row])
        query.get_compiler(connection=connection).execute_sql()

    def _write(self, connection, name, state, policy):
        values = {item: getattr(state, item) for item in STATE_FIELDS}
        values.update(policy=policy.as_dict(), updated_at=timezone.now())
        update_row(connection, name, values)


def update_row(connection, name, values):
    from monitors.models import Circuit  # see the module's docstring

    query = UpdateQuery(Circuit)
    query.add_update_values(values)
    query.add_q(Q(name=name))
    query.get_compiler(connection=connection).execute_sql(CURSOR).close()


def update_policy(connection, name, policy):
    update_row(connection, name, {"policy": policy.as_dict()})


def insert_events(connection, name, transitions):
    from monitors.models import CircuitEvent  # see the module's docstring

    if not transitions:
        return
    rows = [
        CircuitEvent(
            circuit=name, at=item.at, from_state=item.from_state, to_state=item.to_state, cause=item.cause[:500],
            actor=item.actor[:500], consecutive_failures=item.consecutive_failures, window_calls=item.window_calls,
            window_failures=item.window_failures, error_type=item.error_type[:255], error=item.error,
        )
        for item in transitions
    ]
    query = InsertQuery(CircuitEvent)
    names = [item.name for item in CircuitEvent._meta.concrete_fields if item.name != "id"]
    query.insert_values([CircuitEvent._meta.get_field(item) for item in names], rows)
    query.get_compiler(connection=connection).execute_sql()


class RedisStore:
    """State as one JSON value per circuit in Redis, changed with WATCH/MULTI (optimistic: a
    caller that lost the race reads again and re-decides). Short socket timeouts: a breaker that
    waits seconds for its store would be worse than none."""

    kind = "redis"
    PREFIX = "jobwatch:circuit:"
    TIMEOUT = 0.5

    def __init__(self, url, mirror=None):
        import redis  # only a site that keeps its circuits in Redis needs the client


        self._redis = redis
        self.url = url
        self.client = redis.Redis.from_url(url, socket_timeout=self.TIMEOUT, socket_connect_timeout=self.TIMEOUT)
        self.mirror_store = mirror

    def key(self, name):
        return f"{self.PREFIX}{name}"

    def read(self, name):
        try:
            return decode_state(self.client.get(self.key(name)))
        except self._redis.RedisError as error:
            raise StoreUnavailable(f"circuit store (Redis {self.url}): {error}") from error

    def update(self, name, policy, change):
        key = self.key(name)
        try:
            with self.client.pipeline() as pipe:
                while True:
                    try:
                        pipe.watch(key)
                        state = decode_state(pipe.get(key)) or State()
                        result, transitions = change(state)
                        pipe.multi()
                        pipe.set(key, encode_state(state))
                        pipe.execute()
                        break
                    except self._redis.WatchError:
                        continue  # another process changed it first: decide again on its state
        except self._redis.RedisError as error:
            raise StoreUnavailable(f"circuit store (Redis {self.url}): {error}") from error
        if transitions and self.mirror_store is not None:
            try:
                self.mirror_store.mirror(name, state, policy, transitions)
            except StoreUnavailable as error:
                logger.warning("Circuit %s: %s; not in the history: %s", name, error,
                               "; ".join(f"{item.from_state} → {item.to_state} ({item.cause})" for item in transitions))
        return result, transitions, state

    def register(self, name, policy):
        if self.mirror_store is not None:
            self.mirror_store.register(name, policy)

    def names(self):
        return self.mirror_store.names() if self.mirror_store is not None else []


class MemoryStore:
    """State in this process only: the fallback while the shared store is unreachable, and a
    store for scripts and tests that want no sharing."""

    kind = "memory"

    def __init__(self):
        self._states = {}
        self._lock = threading.Lock()

    def read(self, name):
        with self._lock:
            state = self._states.get(name)
            return state.copy() if state else None

    def update(self, name, policy, change):
        with self._lock:
            state = self._states.setdefault(name, State())
            result, transitions = change(state)
            return result, transitions, state.copy()

    def seed(self, name, state):
        """Start from the last state read from the shared store (so a circuit that was open stays
        open while the store is away)."""
        with self._lock:
            if name not in self._states and state is not None:
                self._states[name] = state.copy()

    def forget(self, name):
        with self._lock:
            self._states.pop(name, None)

    def register(self, name, policy):
        pass

    def names(self):
        with self._lock:
            return sorted(self._states)


TIME_FIELDS = ("changed_at", "opened_at", "last_failure_at", "last_success_at")


def encode_state(state):
    data = {item: getattr(state, item) for item in STATE_FIELDS}
    for item in TIME_FIELDS:
        if data[item] is not None:
            data[item] = data[item].timestamp()
    return json.dumps(data)


def decode_state(raw):
    if not raw:
        return None
    data = json.loads(raw)
    for item in TIME_FIELDS:
        if data.get(item) is not None:
            data[item] = datetime.fromtimestamp(data[item], UTC)
    return State(**{item: data[item] for item in STATE_FIELDS if item in data})


# -- the store the settings name ---------------------------------------------------------------

_stores = {}
_stores_lock = threading.Lock()


def shared_store():
    """The store named by JOBWATCH["CIRCUIT_STORE"]: "database" (the default database, or
    "database:<alias>") or a redis:// URL. One per process and setting."""
    where = setting("CIRCUIT_STORE")
    with _stores_lock:
        store = _stores.get(where)
        if store is None:
            store = _stores[where] = make_store(where)
        return store


def make_store(where):
    if where.startswith(("redis://", "rediss://", "unix://")):
        return RedisStore(where, mirror=DatabaseStore())
    if where == "database" or where.startswith("database:"):
        _, _, alias = where.partition(":")
        return DatabaseStore(alias or "default")
    raise ValueError(f'JOBWATCH["CIRCUIT_STORE"] must be "database", "database:<alias>" or a redis:// URL, not {where!r}')
