"""Writing job events into JobExecution: one multi-row INSERT … ON CONFLICT per batch.

Events for one task id come from several processes, in any order. Each column has a merge rule,
applied identically in Python (to fold a batch's events for the same task into one row, which
PostgreSQL requires of a multi-row upsert) and in SQL (to fold that row into what is stored):

- FIRST:  the first known value stays (arguments, origin: what the enqueue saw);
- LATEST: the value of the event furthest along (by `progress`) replaces it, if the event knows it;
- MAX:    the larger one (progress, retries, updated_at).

"Known" means not NULL, and for text columns not empty. The same SQL runs on PostgreSQL and SQLite.
"""

from django.db import connections

from monitors.models import JobExecution

FIRST, LATEST, MAX = "first", "latest", "max"

COLUMN_RULES = {
    "task_name": FIRST,
    "state": LATEST,
    "progress": MAX,
    "queue": LATEST,
    "exchange": LATEST,
    "routing_key": LATEST,
    "priority": LATEST,
    "args": FIRST,
    "kwargs": FIRST,
    "payload_size": FIRST,
    "payload_complete": FIRST,
    "eta": LATEST,
    "expires": LATEST,
    "retries": MAX,
    "enqueued_at": FIRST,
    "received_at": LATEST,
    "started_at": LATEST,
    "finished_at": LATEST,
    "runtime": LATEST,
    "worker": LATEST,
    "worker_pid": LATEST,
    "exception_type": LATEST,
    "exception_message": LATEST,
    "traceback": LATEST,
    "result": LATEST,
    "parent_id": FIRST,
    "root_id": FIRST,
    "group_id": FIRST,
    "replay_of": FIRST,
    "origin_kind": FIRST,
    "origin_model": FIRST,
    "origin_pk": FIRST,
    "origin_created": FIRST,
    "origin_update_fields": FIRST,
    "origin_receiver": FIRST,
    "origin_in_atomic": FIRST,
    "origin_deferred": FIRST,
    "origin_transaction": FIRST,
    "origin_committed_at": FIRST,
    "origin_request": FIRST,
    "origin_request_id": FIRST,
    "origin_task": FIRST,
    "references": FIRST,
    "updated_at": MAX,
}
COLUMNS = ["task_id", *COLUMN_RULES]
FIELDS = {name: JobExecution._meta.get_field(name) for name in COLUMNS}
TEXT_COLUMNS = {
    name for name, field in FIELDS.items() if field.get_internal_type() in ("CharField", "TextField")
}
# Text columns are NOT NULL; an event that does not know one sends "".
UNKNOWN = {name: ("" if name in TEXT_COLUMNS else None) for name in COLUMNS}
UNKNOWN.update({"progress": 0, "retries": 0})
MAX_LENGTHS = {name: field.max_length for name, field in FIELDS.items() if getattr(field, "max_length", None)}


def is_known(name, value):
    return value is not None and not (name in TEXT_COLUMNS and value == "")


def merge_into(row, event):
    """Fold `event` (a dict of some columns) into `row` (a complete dict) by the column rules."""
    newer = event.get("progress", 0) >= row["progress"]
    for name, value in event.items():
        if name == "task_id" or not is_known(name, value):
            continue
        rule = COLUMN_RULES[name]
        if rule == FIRST:
            if not is_known(name, row[name]):
                row[name] = value
        elif rule == LATEST:
            if newer:
                row[name] = value
        elif row[name] is None or value > row[name]:
            row[name] = value
    return row


def fold_events(events):
    """One complete row per task id, in first-seen order."""
    rows = {}
    for event in events:
        task_id = event["task_id"]
        row = rows.get(task_id)
        if row is None:
            row = rows[task_id] = dict(UNKNOWN, task_id=task_id)
            row["progress"] = event.get("progress", 0)
        merge_into(row, event)
    for row in rows.values():
        for name, limit in MAX_LENGTHS.items():
            value = row[name]
            if isinstance(value, str) and len(value) > limit:
                row[name] = value[:limit]
    return list(rows.values())


def set_clause(column, table, vendor, quote):
    name = quote(column)  # "references" is a reserved word in SQL
    mine, theirs = f"{table}.{name}", f"excluded.{name}"
    known = f"{theirs} <> ''" if column in TEXT_COLUMNS else f"{theirs} IS NOT NULL"
    rule = COLUMN_RULES[column]
    if rule == FIRST:
        if column in TEXT_COLUMNS:
            return f"{name} = CASE WHEN {mine} = '' THEN {theirs} ELSE {mine} END"
        return f"{name} = COALESCE({mine}, {theirs})"
    if rule == LATEST:
        return f"{name} = CASE WHEN excluded.progress >= {table}.progress AND {known} THEN {theirs} ELSE {mine} END"
    greatest = "GREATEST" if vendor == "postgresql" else "MAX"
    return f"{name} = {greatest}({mine}, {theirs})"


_sql_cache = {}


def upsert_sql(connection, row_count):
    vendor, quote = connection.vendor, connection.ops.quote_name
    key = (vendor, row_count)
    sql = _sql_cache.get(key)
    if sql is None:
        table = quote(JobExecution._meta.db_table)
        row = "(" + ", ".join(["%s"] * len(COLUMNS)) + ")"
        sql = (
            f"INSERT INTO {table} ({', '.join(quote(name) for name in COLUMNS)}) VALUES "
            + ", ".join([row] * row_count)
            + " ON CONFLICT (task_id) DO UPDATE SET "
            + ", ".join(set_clause(name, table, vendor, quote) for name in COLUMN_RULES)
        )
        if len(_sql_cache) < 64:
            _sql_cache[key] = sql
    return sql


def write_rows(rows, using):
    """Upsert complete rows (from fold_events) in one statement and transaction."""
    connection = connections[using]
    params = []
    for row in rows:
        for name in COLUMNS:
            value = row[name]
            params.append(None if value is None else FIELDS[name].get_db_prep_save(value, connection))
    with connection.cursor() as cursor:
        cursor.execute(upsert_sql(connection, len(rows)), params)
