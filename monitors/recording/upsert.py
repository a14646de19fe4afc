"""Writing job events into JobExecution: one multi-row INSERT … ON CONFLICT per batch.

Events for one task id come from several processes, in any order. Each column has a merge rule,
applied identically in Python (to fold a batch's events for the same task into one row, which
PostgreSQL requires of a multi-row upsert) and in SQL (to fold that row into what is stored):

- FIRST:  the first known value stays (arguments, routing, origin: what the enqueue saw);
- LATEST: the value of the event furthest along (by `progress`) replaces it, if the event knows it;
- ERROR:  like LATEST, ordered by `error_progress` (the progress of the event that failed);
- CAUSE:  who that error came from (service, status, kind): set by the event of the newest error
          whatever its value, empty included, so that an error naming no service does not keep
          the service an earlier attempt's error named;
- MAX:    the larger one (progress, retries, and the times of the last attempt's stages, which
          only grow, so a late-arriving "received" still lands after "started" was written).

"Known" means not NULL, and for text columns not empty. The same SQL runs on PostgreSQL and SQLite.
"""

from bisect import bisect_left
from datetime import UTC, datetime

from monitors import metric_histograms, partitions, timing
from monitors.db import column_arrays, converter, execute_prepared, row_values, upsert
from monitors.models import JobExecution, JobHistogram, JobPayload, JobTally, TaskCounter
from monitors.recording.events import COUNTS_KEY, PAYLOAD_KEY

FIRST, LATEST, MAX, ERROR, CAUSE = "first", "latest", "max", "error", "cause"


COLUMN_RULES = {
    # What the publish saw. Also sent by worker events, as a fallback when the enqueue was lost.
    "task_name": FIRST,
    "queue": FIRST,
    "exchange": FIRST,
    "routing_key": FIRST,
    "priority": FIRST,
    "args": FIRST,
    "kwargs": FIRST,
    "payload_size": FIRST,
    "payload_complete": FIRST,
    "payload_hash": FIRST,
    "expires": FIRST,
    "enqueued_at": FIRST,
    "parent_id": FIRST,
    "root_id": FIRST,
    "group_id": FIRST,
    "replay_of": FIRST,
    "origin_kind": FIRST,
    "origin_model": FIRST,
    "origin_pk": FIRST,
    "origin_save": FIRST,
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
    "origin_entry": FIRST,
    "references": FIRST,
    # Where the job is now: the event furthest along decides.
    "state": LATEST,
    "runtime": LATEST,
    "worker": LATEST,
    "worker_pid": LATEST,
    "result": LATEST,
    "circuit": LATEST,
    # Only ever grow: a retry's eta is later, each attempt's times are later.
    "progress": MAX,
    "retries": MAX,
    "circuit_waits": MAX,
    "eta": MAX,
    "received_at": MAX,
    "started_at": MAX,
    "finished_at": MAX,
    "updated_at": MAX,
    "error_progress": MAX,
    # The last error, ordered by the progress of the event that carried it, so a retried
    # attempt's error survives the next attempt's events arriving before it.
    "exception_type": ERROR,
    "exception_message": ERROR,
    "traceback": ERROR,
    "error_target": CAUSE,
    "error_status": CAUSE,
    "error_kind": CAUSE,
}
COLUMNS = ["task_id", *COLUMN_RULES]
FIELDS = {name: JobExecution._meta.get_field(name) for name in COLUMNS}
FIELDS_IN_ORDER = [FIELDS[name] for name in COLUMNS]  # aligned with COLUMNS, as column_arrays takes them
TEXT_COLUMNS = {
    name for name, field in FIELDS.items() if field.get_internal_type() in ("CharField", "TextField")
}
# Text columns are NOT NULL; an event that does not know one sends "".
UNKNOWN = {name: ("" if name in TEXT_COLUMNS else None) for name in COLUMNS}
UNKNOWN.update({"progress": 0, "retries": 0, "circuit_waits": 0})
CAUSE_COLUMNS = [name for name, rule in COLUMN_RULES.items() if rule == CAUSE]
NUL_STAND_IN = "\ufffd"  # Unicode's replacement character
MAX_LENGTHS = {name: field.max_length for name, field in FIELDS.items() if getattr(field, "max_length", None)}


def is_known(name, value):
    return value is not None and not (name in TEXT_COLUMNS and value == "")


def merge_into(row, event):
    """Fold `event` (a dict of some columns) into `row` (a complete dict) by the column rules."""
    newer = event.get("progress", 0) >= row["progress"]
    error_progress = event.get("error_progress")
    newer_error = error_progress is not None and error_progress >= (
        row["error_progress"] if row["error_progress"] is not None else -1)
    for name, value in event.items():
        if name == "task_id" or name.startswith("_") or not is_known(name, value):
            continue  # "_…" keys ride along for other tables (PAYLOAD_KEY)
        rule = COLUMN_RULES[name]
        if rule == CAUSE:
            continue  # below, known or not
        if rule == FIRST:
            if not is_known(name, row[name]):
                row[name] = value
        elif rule == LATEST:
            if newer:
                row[name] = value
        elif rule == ERROR:
            if event.get("error_progress", -1) >= (row["error_progress"] if row["error_progress"] is not None else -1):
                row[name] = value
        elif row[name] is None or value > row[name]:
            row[name] = value
    if newer_error:
        for name in CAUSE_COLUMNS:
            row[name] = event.get(name, UNKNOWN[name])
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
        for name in TEXT_COLUMNS:
            value = row[name]
            if not isinstance(value, str):
                continue
            if "\x00" in value:
                # PostgreSQL's text cannot hold NUL (an exception message quoting binary data):
                # one such value would otherwise fail the whole batch, every other job's included.
                value = row[name] = value.replace("\x00", NUL_STAND_IN)
            limit = MAX_LENGTHS.get(name)
            if limit is not None and len(value) > limit:
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
    if rule in (ERROR, CAUSE):
        mine_progress, theirs_progress = f"{table}.{quote('error_progress')}", f"excluded.{quote('error_progress')}"
        newer = f"COALESCE({theirs_progress}, -1) >= COALESCE({mine_progress}, -1)"
        if rule == CAUSE:
            return f"{name} = CASE WHEN {theirs_progress} IS NOT NULL AND {newer} THEN {theirs} ELSE {mine} END"
        return f"{name} = CASE WHEN {newer} AND {known} THEN {theirs} ELSE {mine} END"
    if rule == LATEST:
        return f"{name} = CASE WHEN excluded.progress >= {table}.progress AND {known} THEN {theirs} ELSE {mine} END"
    # SQLite's MAX() is NULL when either side is; GREATEST() skips NULLs. COALESCE makes both agree.
    greatest = "GREATEST" if vendor == "postgresql" else "MAX"
    return f"{name} = {greatest}(COALESCE({mine}, {theirs}), COALESCE({theirs}, {mine}))"


_sql_cache = {}


def conflict_columns(connection):
    """What makes a job's row unique: its task id, and on PostgreSQL's day-partitioned table the
    partition key too (monitors/partitions.py), which every event of the job carries."""
    key = partitions.partition_key(connection, JobExecution._meta.db_table)
    return ["task_id", key] if key else ["task_id"]


def upsert_sql(connection, row_count):
    """PostgreSQL: one fixed statement whatever the batch size, `INSERT … SELECT FROM unnest(one
    array per column)`: one parameter per column rather than a VALUES list with tens of thousands
    of placeholders, so that it can be prepared once per connection (see write_rows).
    SQLite, which has no arrays: VALUES."""
    vendor, quote = connection.vendor, connection.ops.quote_name
    conflict = conflict_columns(connection)
    key = (vendor, row_count if vendor != "postgresql" else 0, *conflict)
    sql = _sql_cache.get(key)
    if sql is None:
        table = quote(JobExecution._meta.db_table)
        if vendor == "postgresql":
            # A column no row of the batch knows is sent as NULL rather than as an array of
            # unknowns (write_rows): unnest() pads it with NULLs, which a text column reads as "".
            arrays = ", ".join(f"%b::{FIELDS[name].db_type(connection)}[]" for name in COLUMNS)
            values = ", ".join(f"COALESCE(u.{quote(name)}, '')" if name in TEXT_COLUMNS else f"u.{quote(name)}"
                               for name in COLUMNS)
            rows = f"SELECT {values} FROM unnest({arrays}) AS u({', '.join(quote(name) for name in COLUMNS)})"
        else:
            row = "(" + ", ".join(["%s"] * len(COLUMNS)) + ")"
            rows = "VALUES " + ", ".join([row] * row_count)
        sql = (
            f"INSERT INTO {table} ({', '.join(quote(name) for name in COLUMNS)}) {rows}"
            + f" ON CONFLICT ({', '.join(quote(name) for name in conflict)}) DO UPDATE SET "
            + ", ".join(set_clause(name, table, vendor, quote) for name in COLUMN_RULES if name not in conflict)
        )
        if len(_sql_cache) < 64:
            _sql_cache[key] = sql
    return sql


def converters(connection):
    """Per column, db.converter: Django's conversion where the driver needs one, else None."""
    cached = _converters.get(connection.vendor)
    if cached is None:
        cached = _converters[connection.vendor] = [converter(FIELDS[name], connection) for name in COLUMNS]
    return cached


_converters = {}


def write_rows(rows, connection):
    """Upsert complete rows (from fold_events) in one statement, on `connection`."""
    if "enqueued_at" in conflict_columns(connection):
        find_keys(rows, connection)
    prepare = converters(connection)
    if connection.vendor == "postgresql":
        params = column_arrays(rows, COLUMNS, FIELDS_IN_ORDER, prepare, connection, unknown=UNKNOWN)
        execute_prepared(connection, upsert_sql(connection, len(rows)), params)
        return
    with connection.cursor() as cursor:
        cursor.execute(upsert_sql(connection, len(rows)), row_values(rows, COLUMNS, prepare, connection))


def find_keys(rows, connection):
    """Give every row its partition key. A row whose events did not say when the job was first
    published (a message sent without Jobwatch's header: by a producer that does not run it, or
    before it was installed) takes the time the job's row already has — the newest, should one task
    id have been published twice — or, for a job seen for the first time, the earliest time its
    events know. Rare, so the look-up (an index probe per day partition) costs nothing otherwise."""
    missing = [row for row in rows if row["enqueued_at"] is None]
    if not missing:
        return
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT DISTINCT ON (task_id) task_id, enqueued_at FROM {quote(JobExecution._meta.db_table)}"
            " WHERE task_id = ANY(%s) ORDER BY task_id, enqueued_at DESC", [[row["task_id"] for row in missing]])
        stored = dict(cursor.fetchall())
    for row in missing:
        known = [row[name] for name in ("received_at", "started_at", "finished_at", "updated_at") if row[name] is not None]
        row["enqueued_at"] = stored.get(row["task_id"]) or (min(known) if known else datetime.now(UTC))


def write_payloads(events, connection):
    """Keep the full arguments some events carry (failed jobs whose recorded ones are incomplete)
    in JobPayload, the latest per task id."""

    latest = {event["task_id"]: event for event in events if event.get(PAYLOAD_KEY)}
    rows = [{"task_id": task_id, "body": event[PAYLOAD_KEY], "recorded_at": event.get("updated_at")}
            for task_id, event in latest.items()]
    upsert(connection, JobPayload, rows, conflict=["task_id"], replace=["body", "recorded_at"])


def counter_increments(events, runtime_bounds=None, wait_bounds=None):
    """{(metric, name, hostname, queue, exception, le): increment} of a batch's counts: the
    counters, and celery-exporter's two histograms — runtime of finished jobs and queue wait of
    started ones — in the bounds the settings name (monitors/metric_histograms.py).

    Each time is counted once, in the first bucket whose bound it does not exceed; the buckets are
    made cumulative (as Prometheus reads them) once per batch and series, not once per job."""
    histograms = {}
    for kind, given in (("runtime", runtime_bounds), ("queue_wait", wait_bounds)):
        kind_bounds = tuple(given if given is not None else metric_histograms.bounds(kind))
        labels_of = [metric_histograms.le_label(bound) for bound in kind_bounds] + ["+Inf"]
        histograms[kind] = (kind_bounds, labels_of, metric_histograms.stored_metric(kind, "bucket", kind_bounds),
                            metric_histograms.stored_metric(kind, "sum", kind_bounds))
    totals, per_bucket = {}, {}

    def add(key, value):
        totals[key] = totals.get(key, 0) + value

    for event in events:
        for metric, name, hostname, queue, exception, seconds in event.get(COUNTS_KEY) or ():
            labels = (name[:255], hostname[:255], queue[:255])
            add((metric, *labels, exception[:255], ""), 1)
            if seconds is None:
                continue
            kind = "queue_wait" if metric == "started" else "runtime"
            kind_bounds, les, _, stored_sum = histograms[kind]
            add((stored_sum, *labels, "", ""), seconds)  # the count is the +Inf bucket's
            counts = per_bucket.setdefault((kind, labels), [0] * len(les))
            counts[bisect_left(kind_bounds, seconds)] += 1
    for (kind, labels), counts in per_bucket.items():
        _, les, stored_bucket, _ = histograms[kind]
        running = 0
        for le, count in zip(les, counts, strict=True):
            running += count
            if running:
                add((stored_bucket, *labels, "", le), running)
    return totals


def add_increments(totals, more):
    """Sum two {key: increment} maps; an increment is a number or a tuple of numbers (summed
    element by element)."""
    merged = dict(totals)
    for key, value in more.items():
        if key not in merged:
            merged[key] = value
        elif isinstance(value, tuple):
            merged[key] = tuple(a + b for a, b in zip(merged[key], value, strict=True))
        else:
            merged[key] = merged[key] + value
    return merged


def write_task_counters(increments, connection):
    """Add counter_increments() to TaskCounter, in one statement."""

    labels = ["metric", "name", "hostname", "queue_name", "exception", "le"]
    # In one order everywhere: every writer's batch touches the same hot counter rows, and
    # row locks taken in different orders could deadlock two writers.
    rows = [{**dict(zip(labels, key, strict=True)), "value": value} for key, value in sorted(increments.items())]
    upsert(connection, TaskCounter, rows, conflict=labels, add=["value"])


def tally_increments(events, minute):
    """{(minute, metric, task, queue, exception): (count, runtime_sum)} of a batch's counts, for
    JobTally; `minute` is when the batch is written (within a flush interval of the events)."""
    totals = {}
    for event in events:
        for metric, name, _hostname, queue, exception, seconds in event.get(COUNTS_KEY) or ():
            key = (minute, metric, name[:255], queue[:255], exception[:255])
            count, runtime_sum = totals.get(key, (0, 0.0))
            runtime = seconds if metric != "started" and seconds is not None else 0.0  # a start's is its wait
            totals[key] = (count + 1, runtime_sum + runtime)
    return totals


def write_tallies(tallies, connection):
    """Add tally_increments() to JobTally, in one statement (sorted, as for the counters)."""

    labels = ["minute", "metric", "task_name", "queue", "exception"]
    rows = [{**dict(zip(labels, key, strict=True)), "count": count, "runtime_sum": runtime_sum}
            for key, (count, runtime_sum) in sorted(tallies.items())]
    upsert(connection, JobTally, rows, conflict=labels, add=["count", "runtime_sum"])


def histogram_increments(events, moment):
    """{(start, resolution, task, measure, outcome, upper_ms): (count, seconds)} of a batch's
    times, for JobHistogram: each time counted in its minute's, its hour's and its (UTC) day's row
    (`moment`, when the batch is written, floored to each)."""
    minute = moment.astimezone(UTC).replace(second=0, microsecond=0)
    hour = minute.replace(minute=0)
    day = hour.replace(hour=0)
    totals = {}
    for event in events:
        for metric, name, _hostname, _queue, _exception, seconds in event.get(COUNTS_KEY) or ():
            if seconds is None:
                continue
            measure, outcome = ("wait", "") if metric == "started" else ("runtime", metric)
            upper = timing.bucket_of(seconds)
            for start, resolution in ((minute, timing.MINUTE), (hour, timing.HOUR), (day, timing.DAY)):
                key = (start, resolution, name[:255], measure, outcome, upper)
                count, total = totals.get(key, (0, 0.0))
                totals[key] = (count + 1, total + seconds)
    return totals


def write_histograms(increments, connection):
    """Add histogram_increments() to JobHistogram, in one statement (sorted, as for the counters)."""

    labels = ["start", "resolution", "task_name", "measure", "outcome", "upper_ms"]
    rows = [{**dict(zip(labels, key, strict=True)), "count": count, "total": total}
            for key, (count, total) in sorted(increments.items())]
    upsert(connection, JobHistogram, rows, conflict=labels, add=["count", "total"])
