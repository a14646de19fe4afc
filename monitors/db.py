"""Database connections of Jobwatch's own, outside Django's connection handler.

The recorder's writer and the circuit breaker's store write from inside users' tasks. Both use a
private connection rather than `connections[alias]`, for two reasons:

- Celery's Django fix-up closes the handler's connections (and psycopg's pool) around every task
  in a prefork pool process; a writer sharing them lost its connection mid-write.
- A task's own `transaction.atomic()` must not swallow Jobwatch's writes: a circuit's failure
  count has to stick even when the task's transaction rolls back.

These helpers take such a connection and run transactions on it (transaction.atomic only knows
the handler's connections).
"""

import contextlib
import copy

from django.db import InterfaceError, OperationalError, connections


def private_connection(alias, purpose, connect_timeout=None):
    """A new connection with the settings of database `alias`, minus the pool; it connects on
    first use. Shareable between threads that take turns (the caller serialises access).
    `connect_timeout` (seconds, PostgreSQL) bounds the wait for an unreachable server."""
    base = connections[alias]
    settings_dict = copy.deepcopy(base.settings_dict)
    options = settings_dict.setdefault("OPTIONS", {})
    options.pop("pool", None)
    if connect_timeout and base.vendor == "postgresql":
        options.setdefault("connect_timeout", connect_timeout)
    connection = type(base)(settings_dict, alias=f"{alias}:jobwatch-{purpose}")
    connection.inc_thread_sharing()
    return connection


@contextlib.contextmanager
def one_transaction(connection):
    """A transaction on a private connection, rolled back if anything fails."""
    connection.set_autocommit(False)
    try:
        yield
        connection.commit()
    except BaseException:
        with contextlib.suppress(Exception):
            connection.rollback()
        raise
    finally:
        with contextlib.suppress(Exception):
            connection.set_autocommit(True)


@contextlib.contextmanager
def write_transaction(connection, durable=True):
    """A transaction that holds the write lock from its first statement, for read-modify-write.

    PostgreSQL: rows are locked by the SELECT … FOR UPDATE the caller issues. SQLite has no row
    locks, and its default (deferred) transaction takes the write lock only at the first write,
    so two processes could read the same state and both write: BEGIN IMMEDIATE takes it at once.

    `durable=False` (PostgreSQL) commits without waiting for the disk: for soft state, where a
    server crash losing the last fraction of a second is harmless and the fsync would be most
    of the cost.
    """
    if connection.vendor != "sqlite":
        with one_transaction(connection):
            if not durable and connection.vendor == "postgresql":
                with connection.cursor() as cursor:
                    cursor.execute("SET LOCAL synchronous_commit TO OFF")
            yield
        return
    connection.ensure_connection()
    with connection.cursor() as cursor:
        cursor.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            with contextlib.suppress(Exception):
                cursor.execute("ROLLBACK")
            raise
        cursor.execute("COMMIT")


def upsert(connection, model, rows, conflict, replace=(), add=()):
    """INSERT … ON CONFLICT (conflict) DO UPDATE, on a private connection (the ORM's bulk_create
    needs the handler's): `replace` columns take the new value, `add` columns add it to the stored
    one. `rows` are dicts with the same keys; values are prepared by the model's fields, as the
    ORM would. PostgreSQL: one prepared statement reading one array per column (execute_prepared).
    SQLite: one statement per UPSERT_PARAMETERS values (it takes at most 32,766 in one); the
    caller's transaction holds them together."""
    if not rows:
        return
    columns = list(rows[0])
    fields = [model._meta.get_field(name) for name in columns]
    quote = connection.ops.quote_name
    table = quote(model._meta.db_table)
    updates = [f"{quote(name)} = excluded.{quote(name)}" for name in replace]
    updates += [f"{quote(name)} = {table}.{quote(name)} + excluded.{quote(name)}" for name in add]
    insert = f"INSERT INTO {table} ({', '.join(quote(name) for name in columns)}) "
    on_conflict = f" ON CONFLICT ({', '.join(quote(name) for name in conflict)}) DO UPDATE SET {', '.join(updates)}"
    converters = [converter(field, connection) for field in fields]
    if connection.vendor == "postgresql":
        arrays = ", ".join(f"%b::{field.db_type(connection)}[]" for field in fields)
        params = column_arrays(rows, columns, fields, converters, connection)
        execute_prepared(connection, f"{insert}SELECT * FROM unnest({arrays}){on_conflict}", params)
        return
    placeholders = "(" + ", ".join(["%s"] * len(columns)) + ")"
    per_statement = max(UPSERT_PARAMETERS // len(columns), 1)
    with connection.cursor() as cursor:
        for start in range(0, len(rows), per_statement):
            chunk = rows[start : start + per_statement]
            params = row_values(chunk, columns, converters, connection)
            cursor.execute(f"{insert}VALUES {', '.join([placeholders] * len(chunk))}{on_conflict}", params)


def column_arrays(rows, columns, fields, converters, connection, unknown=None):
    """The parameters of an `unnest(%b::type[], …)` statement (PostgreSQL): per column, its
    values in every row, converted (`converters`, aligned with `columns`, from converter()) and
    made one type. A column whose value in every row is its `unknown` one (None or "", by column
    name) goes as one NULL: a worker's batch knows nothing of origins, most jobs carry no error,
    and an array of nothing would still be built and sent."""
    unknown = unknown or {}
    params = []
    for name, field, convert in zip(columns, fields, converters, strict=True):
        values = [row[name] for row in rows]
        nobody_knows = unknown.get(name, 0)
        if nobody_knows in (None, "") and values.count(nobody_knows) == len(values):
            params.append(None)
            continue
        if convert is not None:
            values = [None if value is None else convert(value, connection) for value in values]
        params.append(uniform(field, values))
    return params


def row_values(rows, columns, converters, connection):
    """The parameters of a multi-row VALUES statement: every row's values in column order,
    converted where `converters` (aligned with `columns`) says."""
    params = []
    for row in rows:
        for name, convert in zip(columns, converters, strict=True):
            value = row[name]
            params.append(value if value is None or convert is None else convert(value, connection))
    return params


def converter(field, connection):
    """What turns a Python value into a parameter for `field` where the driver needs Django's
    help, or None where it takes the value as it is (text, numbers; on PostgreSQL also datetimes
    and booleans): most of the recorder's columns, which saves a call per value in its batches.
    The same for every row of a column, so callers look it up once per column."""
    kind = field.get_internal_type()
    if kind == "JSONField":
        # What JSONField.get_db_prep_save comes to for a plain value, without its layers: a JSON
        # column or two in every row of every batch.
        encoder = field.encoder
        return lambda value, connection: connection.ops.adapt_json_value(value, encoder)
    if kind in AS_THEY_ARE or (connection.vendor == "postgresql" and kind in ("DateTimeField", "BooleanField")):
        return None
    return field.get_db_prep_save


AS_THEY_ARE = frozenset({"CharField", "TextField", "FloatField", "IntegerField", "BigIntegerField", "SmallIntegerField",
                         "PositiveIntegerField", "PositiveSmallIntegerField", "PositiveBigIntegerField",
                         "AutoField", "BigAutoField", "SmallAutoField"})


def uniform(field, values):
    """One column's values as an array psycopg can send in binary, which takes one Python type per
    array: a float column that also holds whole numbers (a sum that is still 0), a text column
    given a number, are made one type by the field's kind. Almost always a no-op."""
    kinds = set(map(type, values))
    kinds.discard(type(None))
    if len(kinds) <= 1:
        return values
    kind = field.get_internal_type()
    convert = float if kind == "FloatField" else int if "Integer" in kind else str if kind in ("CharField", "TextField") else None
    if convert is None:
        return values  # the database's own error then names the column
    return [None if value is None else convert(value) for value in values]


def execute_prepared(connection, sql, params):
    """PostgreSQL: run `sql` as a prepared statement with its parameters sent apart (in binary where
    its placeholders say %b).
    Django's cursors put parameters into the statement's text on the client: for the recorder's
    batches that means rendering arrays of thousands of values as literals (psycopg escapes each
    element with a regular expression) and the server parsing and planning the statement anew each
    time. A statement whose text is the same for every batch is planned once per connection and
    its arrays travel as they are (benchmarks/ingest.py measures it).

    That is psycopg 3's; with psycopg2 (which Django also drives) the statement runs through
    Django's cursor as before, its %b placeholders read as %s."""
    connection.ensure_connection()
    if type(connection.connection).__module__.partition(".")[0] != "psycopg":
        with connection.cursor() as cursor:
            cursor.execute(sql.replace("%b", "%s"), params)
        return
    # Here, not at the top: a host on SQLite or psycopg2 has no psycopg 3 to import (pyproject.toml).
    from psycopg import Cursor

    # Django's cursors turn the driver's errors into django.db's; a cursor of the driver's own does
    # not, so this does: a connection lost mid-statement must read as OperationalError (transient,
    # retried) to the recorder, not as a bug that drops the batch.
    with connection.wrap_database_errors, Cursor(connection.connection) as cursor:
        cursor.execute(sql, params, prepare=True)


UPSERT_PARAMETERS = 30_000


def is_transient(error, vendor):
    """Will trying the same statement again later work? Connection loss and lock timeouts: yes.
    SQLite reports both those and broken SQL as OperationalError, so ask what it said."""
    if isinstance(error, InterfaceError):
        return True
    if not isinstance(error, OperationalError):
        return False
    if vendor != "sqlite":
        return True
    message = str(error).lower()
    return any(word in message for word in ("locked", "busy", "unable to open", "disk i/o"))


def close_quietly(connection):
    try:
        connection.close()
    except Exception:
        pass
