"""Writing job rows into JobExecution by COPY: a second way to do what upsert.write_rows does.

PostgreSQL only. The rows (complete, from fold_events) are streamed with COPY into a temporary
staging table of this connection, then moved into the job table by one
`INSERT … SELECT … ON CONFLICT DO UPDATE` whose SET clauses are upsert.py's own (set_clause), so
both ways store the same row from the same events; tests/test_staging_merge.py holds them to that.

Why it might pay: COPY sends the values as one stream the server parses column by column, where
write_rows sends one array per column that the server must build and then unnest. What it costs:
three round trips per batch instead of one (create-if-missing, COPY, move).
benchmarks/ingest.py measures one against the other.
"""

from monitors.db import one_transaction
from monitors.models import JobExecution
from monitors.recording import upsert
from monitors.recording.upsert import COLUMN_RULES, COLUMNS, converters, set_clause

STAGING_TABLE = "jobwatch_staging_jobs"


def write_rows_by_copy(rows, connection):
    """Upsert complete rows (from fold_events) through the staging table, on `connection`."""
    if connection.vendor != "postgresql":
        raise NotImplementedError("COPY is PostgreSQL's; use upsert.write_rows elsewhere")
    if not rows:
        return
    find_keys = getattr(upsert, "find_keys", None)
    if find_keys is not None and "enqueued_at" in conflict_of(connection):
        # As write_rows does: a row must know its partition key to meet its stored row.
        find_keys(rows, connection)
    if connection.get_autocommit():
        # The staging table empties itself at every commit (ON COMMIT DELETE ROWS): in autocommit
        # the COPY would commit and lose its rows before the move. The recorder's writer always
        # calls inside a transaction; a caller in autocommit gets one here.
        with one_transaction(connection):
            _copy_and_move(rows, connection)
    else:
        _copy_and_move(rows, connection)


def _copy_and_move(rows, connection):
    # Jsonb for the JSON columns, as write_rows sends them; the other columns go as they are.
    convert_at = [(index, convert) for index, convert in enumerate(converters(connection)) if convert is not None]
    statements = staging_sql(connection)
    with connection.cursor() as cursor:
        # Every time rather than once per connection: a table created in a transaction that then
        # rolled back is gone, and nothing tells a once-only flag so. IF NOT EXISTS is a catalog
        # lookup (its "already exists" notice is dropped: psycopg ignores notices nobody asked for).
        cursor.execute(statements["create"])
        # Django's wrapper does not know COPY; psycopg's own cursor does. Text format: psycopg
        # escapes tabs, newlines and backslashes in text and dumps Jsonb as JSON text.
        with connection.wrap_database_errors, cursor.cursor.copy(statements["copy"]) as copy:
            for row in rows:
                values = [row[name] for name in COLUMNS]
                for index, convert in convert_at:
                    if values[index] is not None:
                        values[index] = convert(values[index], connection)
                copy.write_row(values)
        cursor.execute(statements["move"])


_sql_cache = {}


def conflict_of(connection):
    """What makes a job's row unique, as upsert.py says (on a day-partitioned table the partition
    key is part of it)."""
    conflict_columns = getattr(upsert, "conflict_columns", None)
    return list(conflict_columns(connection)) if conflict_columns else ["task_id"]


def staging_sql(connection):
    conflict = conflict_of(connection)
    key = tuple(conflict)
    cached = _sql_cache.get(key)
    if cached is not None:
        return cached
    quote = connection.ops.quote_name
    table = quote(JobExecution._meta.db_table)
    staging = quote(STAGING_TABLE)
    columns = ", ".join(quote(name) for name in COLUMNS)
    # Only the upsert's columns, typed as the job table has them: LIKE would also copy the NOT
    # NULL of `id`, whose default (an identity) it leaves behind, and every column COPY never fills.
    create = (f"CREATE TEMPORARY TABLE IF NOT EXISTS {staging} ON COMMIT DELETE ROWS AS "
              f"SELECT {columns} FROM {table} WITH NO DATA")
    copy = f"COPY {staging} ({columns}) FROM STDIN"
    # The rows leave the staging table as they are moved: the writer may call twice in one
    # transaction (a batch kept for a retry grows past the batch size and goes in chunks), and
    # the second call must not move the first chunk again. ON COMMIT DELETE ROWS still empties
    # it for good at the commit, dead rows included, so it never grows.
    # The conflict columns are equal on both sides by definition: setting them again would do
    # nothing but ask a partitioned table whether the row moves to another partition.
    updates = ", ".join(set_clause(name, table, connection.vendor, quote) for name in COLUMN_RULES if name not in conflict)
    move = (f"WITH moved AS (DELETE FROM {staging} RETURNING {columns}) "
            f"INSERT INTO {table} ({columns}) SELECT {columns} FROM moved "
            f"ON CONFLICT ({', '.join(quote(name) for name in conflict)}) DO UPDATE SET {updates}")
    cached = _sql_cache[key] = {"create": create, "copy": copy, "move": move}
    return cached
