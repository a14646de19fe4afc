"""Day partitions of the history tables, on PostgreSQL.

A shop running 1,000 jobs a second writes 86 million job rows a day. Kept in one table, pruning a
day of them is a DELETE of 86 million rows (hours of WAL and vacuum, and a table that bloats);
kept in one partition per day, it is dropping one table. So on PostgreSQL the tables that grow
with the jobs are partitioned by range on a time every row knows when it is first written:

- `monitors_jobexecution` on `enqueued_at`, the job's first publish, which every event of the job
  carries (monitors/recording/events.py: ENQUEUED_HEADER). The queries that matter filter on it
  already ("jobs enqueued in the last hour"), so PostgreSQL reads only the days they cover.
- `monitors_jobtally` on `minute`, the minute its counts were written in.

Each day is a partition named `<table>_pYYYYMMDD` ([00:00, 24:00) UTC). The upkeep task creates
them PARTITION_DAYS_AHEAD days ahead; a row for a day with no partition (a clock far off, a week
without upkeep) goes to the catch-all `<table>_default` rather than being refused, and is moved
to its day when that day's partition is made. Retention detaches and drops whole days older than
HISTORY_RETENTION_DAYS, and deletes what the catch-all holds of them.

A unique constraint of a partitioned table must contain the partition key: the job table's
primary key is (id, enqueued_at), and a job is unique by (task_id, enqueued_at) — the recorder's
upsert names both. SQLite (the embedded default) keeps plain tables.

`convert()` turns an existing plain table into a partitioned one (migration 0016) and back.
"""

import logging
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.db import DatabaseError, transaction

from monitors.conf import setting

logger = logging.getLogger("monitors.partitions")


@dataclass(frozen=True)
class History:
    table: str
    key: str
    # Where a row of an old plain table has no key (a job whose enqueue was never recorded), the
    # first of these it knows stands in.
    fallbacks: tuple = field(default=())


JOBS = History("monitors_jobexecution", "enqueued_at", ("received_at", "started_at", "finished_at", "updated_at"))
TALLIES = History("monitors_jobtally", "minute")
HISTORY_TABLES = (JOBS, TALLIES)
BY_TABLE = {history.table: history for history in HISTORY_TABLES}

DAY = timedelta(days=1)
# Detaching a partition takes a brief exclusive lock on the table; a query of the dashboard holding
# it longer makes the upkeep give up and try again next time, rather than stall the recorder.
LOCK_TIMEOUT = "3s"
# Rows of the catch-all partition deleted per statement when pruning it.
DELETE_BATCH = 5000

_keys = {}


def partition_key(connection, table):
    """The column `table` is partitioned on, or None (SQLite, or a plain table). Asked once per
    database per process: the writer asks before every batch."""
    if connection.vendor != "postgresql":
        return None
    cache_key = (connection.settings_dict.get("HOST"), connection.settings_dict.get("PORT"),
                 connection.settings_dict.get("NAME"), table)
    if cache_key not in _keys:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT a.attname FROM pg_partitioned_table p JOIN pg_attribute a"
                " ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0] WHERE p.partrelid = to_regclass(%s)",
                [table])
            found = cursor.fetchone()
        _keys[cache_key] = found[0] if found else None
    return _keys[cache_key]


def forget():
    """Ask again (after a migration changed the tables in this process)."""
    _keys.clear()


def day_start(moment):
    moment = moment.astimezone(UTC)
    return datetime(moment.year, moment.month, moment.day, tzinfo=UTC)


def partition_name(table, day):
    return f"{table}_p{day:%Y%m%d}"


def default_name(table):
    return f"{table}_default"


BOUNDS = re.compile(r"FROM \('([^']+)'\) TO \('([^']+)'\)")


def day_partitions(connection, table):
    """[(name, from, to)] of `table`'s day partitions, oldest first (the catch-all not included)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = to_regclass(%s)", [table])
        found = []
        for name, bound in cursor.fetchall():
            match = BOUNDS.search(bound or "")
            if match:
                found.append((name, parse_bound(match.group(1)), parse_bound(match.group(2))))
    return sorted(found, key=lambda item: item[1])


def catch_all(connection, tables=HISTORY_TABLES, limit=1_000_000):
    """{table: (day partitions, rows in its catch-all)} of each partitioned history table: rows in
    the catch-all mean days arrived that had no partition of their own (the upkeep task not run,
    a clock far off), and pruning cannot drop them by day. Counted up to `limit`."""
    found = {}
    for history in tables:
        if partition_key(connection, history.table) is None:
            continue
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT count(*) FROM (SELECT 1 FROM {quote(connection, default_name(history.table))} LIMIT %s) rows",
                           [limit])
            rows = cursor.fetchone()[0]
        found[history.table] = (len(day_partitions(connection, history.table)), rows)
    return found


def parse_bound(text):
    # pg_get_expr prints a timestamptz bound in the session's time zone, e.g. "2026-12-01 00:00:00+00".
    return datetime.fromisoformat(text if re.search(r"[+-]\d\d(:?\d\d)?$", text) else text + "+00:00").astimezone(UTC)


def quote(connection, name):
    return connection.ops.quote_name(name)


# -- making days ahead ----------------------------------------------------------------------------


def ensure_days(connection, first_day, last_day, tables=HISTORY_TABLES):
    """Partitions for every day from `first_day` to `last_day` (inclusive) of each partitioned
    table, made where missing. Returns the names made."""
    made = []
    for history in tables:
        if partition_key(connection, history.table) is None:
            continue
        existing = {start for _, start, _ in day_partitions(connection, history.table)}
        day = day_start(first_day)
        while day <= day_start(last_day):
            if day not in existing:
                try:
                    made.append(add_day(connection, history, day))
                except DatabaseError as error:
                    # A lock not had in time, most likely: the next upkeep makes it; until then the
                    # day's rows wait in the catch-all partition.
                    logger.warning("Jobwatch could not make the partition of %s for %s: %s", history.table, day.date(), error)
            day += DAY
    return made


def add_day(connection, history, day):
    """Make the partition of `day`, moving into it what the catch-all partition holds of that
    day (a partition's range must not overlap rows the catch-all has)."""
    table, key = history.table, history.key
    name = partition_name(table, day)
    q = lambda identifier: quote(connection, identifier)  # noqa: E731
    params = [day, day + DAY]
    with transaction.atomic(using=connection.alias):
        with connection.cursor() as cursor:
            cursor.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
            cursor.execute(f"SELECT 1 FROM {q(default_name(table))} WHERE {q(key)} >= %s AND {q(key)} < %s LIMIT 1", params)
            if cursor.fetchone() is None:
                cursor.execute(f"CREATE TABLE {q(name)} PARTITION OF {q(table)} FOR VALUES FROM (%s) TO (%s)", params)
            else:
                cursor.execute(f"CREATE TABLE {q(name)} (LIKE {q(table)} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
                cursor.execute(
                    f"WITH moved AS (DELETE FROM {q(default_name(table))} WHERE {q(key)} >= %s AND {q(key)} < %s RETURNING *)"
                    f" INSERT INTO {q(name)} SELECT * FROM moved", params)
                cursor.execute(f"ALTER TABLE {q(table)} ATTACH PARTITION {q(name)} FOR VALUES FROM (%s) TO (%s)", params)
    return name


def prepare(connection, now=None, ahead=None):
    """The upkeep: yesterday's, today's and `ahead` (PARTITION_DAYS_AHEAD) days' partitions."""
    if connection.vendor != "postgresql":
        return []
    now = now or datetime.now(UTC)
    ahead = setting("PARTITION_DAYS_AHEAD") if ahead is None else ahead
    with transaction.atomic(using=connection.alias):
        with connection.cursor() as cursor:
            # One upkeep at a time (it may run on several workers at once): the others have nothing to do.
            cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [ADVISORY_LOCK])
            if not cursor.fetchone()[0]:
                return []
        return ensure_days(connection, now - DAY, now + ahead * DAY)


ADVISORY_LOCK = 0x6A6F627761746368  # "jobwatch"


# -- dropping old days ----------------------------------------------------------------------------


@dataclass
class Pruned:
    days: int = 0  # day partitions dropped
    rows: int = 0  # rows they held, by the planner's count (exact for a never-analysed day)
    deleted: int = 0  # rows deleted from the catch-all
    longest_lock: float = 0.0  # seconds the table was locked to detach a day (what writers wait)
    seconds: float = 0.0  # all of it, the freeing of the days' files included


def drop_before(connection, history, cutoff):
    """Drop the day partitions of `history` that end at or before `cutoff`, then delete the
    catch-all partition's rows older than it. The day that holds the cutoff is kept whole
    (retention is by whole days). Returns a Pruned.

    Each day is detached in a transaction of its own, then dropped in another: the detach holds
    the table's lock for an instant, the drop — the filesystem freeing the day's files, about a
    second per gigabyte here — holds only the detached day's."""
    table = history.table
    q = lambda identifier: quote(connection, identifier)  # noqa: E731
    pruned = Pruned()
    started = time.perf_counter()
    for name, _start, end in day_partitions(connection, table):
        if end > cutoff:
            break
        try:
            with transaction.atomic(using=connection.alias):
                with connection.cursor() as cursor:
                    cursor.execute("SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass(%s)", [name])
                    estimate = cursor.fetchone()[0]
                    if estimate < 0:  # never analysed: small enough to count
                        cursor.execute(f"SELECT count(*) FROM {q(name)}")
                        estimate = cursor.fetchone()[0]
            locked = time.perf_counter()
            with transaction.atomic(using=connection.alias):
                with connection.cursor() as cursor:
                    cursor.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
                    # DETACH … CONCURRENTLY would take no exclusive lock, but PostgreSQL refuses it
                    # while a catch-all partition exists; a plain DETACH holds its lock for an instant.
                    cursor.execute(f"ALTER TABLE {q(table)} DETACH PARTITION {q(name)}")
            pruned.longest_lock = max(pruned.longest_lock, time.perf_counter() - locked)
            with transaction.atomic(using=connection.alias):
                with connection.cursor() as cursor:
                    cursor.execute(f"DROP TABLE {q(name)}")
        except DatabaseError as error:
            logger.warning("Jobwatch could not drop the partition %s (it will try again next time): %s", name, error)
            break
        pruned.days += 1
        pruned.rows += estimate
    default = q(default_name(table))
    while True:
        with transaction.atomic(using=connection.alias):
            with connection.cursor() as cursor:
                cursor.execute(f"DELETE FROM {default} WHERE ctid IN (SELECT ctid FROM {default} WHERE {q(history.key)} < %s"
                               f" LIMIT {DELETE_BATCH})", [cutoff])
                count = cursor.rowcount
        pruned.deleted += count
        if count < DELETE_BATCH:
            break
    pruned.seconds = time.perf_counter() - started
    if pruned.days or pruned.deleted:
        logger.info("Jobwatch pruned %s: %d days dropped (about %d rows), %d old rows of the catch-all deleted, in %.1f s"
                    " (the table locked %.0f ms at most)", table, pruned.days, pruned.rows, pruned.deleted, pruned.seconds,
                    pruned.longest_lock * 1000)
    return pruned


# -- turning a plain table into a partitioned one, and back ---------------------------------------


def convert(connection, history, partitioned=True, now=None, keep_days=None, ahead=None):
    """Rebuild `history.table` partitioned by day on its key (or, `partitioned=False`, as the plain
    table it was), keeping every row, id and index: the table is renamed, a new one made like it,
    the rows copied, the old table dropped, then the constraints and the old table's indexes made
    again on the new one (on a partitioned table, each becomes an index of every partition).

    Partitions are made for each day of the last `keep_days` (HISTORY_RETENTION_DAYS + 1) that
    holds rows, and the days ahead; older rows go to the catch-all and the next pruning deletes
    them. Runs in the caller's transaction (a migration's). Back to plain, rows that share their
    unique columns but not their key (one task id published at two times) keep the newest."""
    table, key = history.table, history.key
    q = lambda identifier: quote(connection, identifier)  # noqa: E731
    old = f"{table}_before_partitioning" if partitioned else f"{table}_partitioned"
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema() AND tablename = %s"
                       " AND indexname NOT IN (SELECT conname FROM pg_constraint WHERE conrelid = to_regclass(%s))",
                       [table, table])
        # A partitioned table's index prints as "ON ONLY table", which made again would cover no partition.
        index_definitions = [row[0].replace(" ON ONLY ", " ON ", 1) for row in cursor.fetchall()]
        cursor.execute(
            "SELECT c.conname, c.contype, array_agg(a.attname ORDER BY k.ordinality) FROM pg_constraint c"
            " CROSS JOIN LATERAL unnest(c.conkey) WITH ORDINALITY AS k(attnum, ordinality)"
            " JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum"
            " WHERE c.conrelid = to_regclass(%s) AND c.contype IN ('p', 'u') GROUP BY c.conname, c.contype", [table])
        constraints = cursor.fetchall()
        cursor.execute("SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attnum > 0"
                       " AND NOT attisdropped ORDER BY attnum", [table])
        columns = [row[0] for row in cursor.fetchall()]
        cursor.execute("SELECT a.attname FROM pg_attribute a WHERE a.attrelid = to_regclass(%s) AND a.attidentity <> ''",
                       [table])
        identity = [row[0] for row in cursor.fetchall()]

        cursor.execute(f"ALTER TABLE {q(table)} RENAME TO {q(old)}")
        like = f"LIKE {q(old)} INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING IDENTITY INCLUDING STORAGE INCLUDING COMMENTS"
        listed = ", ".join(q(column) for column in columns)
        if partitioned:
            cursor.execute(f"CREATE TABLE {q(table)} ({like}) PARTITION BY RANGE ({q(key)})")
            cursor.execute(f"ALTER TABLE {q(table)} ALTER COLUMN {q(key)} SET NOT NULL")
            cursor.execute(f"CREATE TABLE {q(default_name(table))} PARTITION OF {q(table)} DEFAULT")
            now = now or datetime.now(UTC)
            keep_days = setting("HISTORY_RETENTION_DAYS") + 1 if keep_days is None else keep_days
            first = day_start(now) - keep_days * DAY
            cursor.execute(f"SELECT DISTINCT date_trunc('day', {q(key)}, 'UTC') FROM {q(old)}"
                           f" WHERE {q(key)} >= %s AND {q(key)} < %s", [first, day_start(now)])
            days = {day_start(row[0]) for row in cursor.fetchall()}
            ahead = setting("PARTITION_DAYS_AHEAD") if ahead is None else ahead
            days |= {day_start(now) + offset * DAY for offset in range(-1, ahead + 1)}
            for day in sorted(days):
                cursor.execute(f"CREATE TABLE {q(partition_name(table, day))} PARTITION OF {q(table)}"
                               " FOR VALUES FROM (%s) TO (%s)", [day, day + DAY])
            known = [q(key), *(q(name) for name in history.fallbacks)]
            values = ", ".join(f"COALESCE({', '.join(known)}, now())" if column == key and history.fallbacks
                               else q(column) for column in columns)
            cursor.execute(f"INSERT INTO {q(table)} ({listed}) SELECT {values} FROM {q(old)}")
        else:
            cursor.execute(f"CREATE TABLE {q(table)} ({like})")
            if history.fallbacks:  # the plain table allows a row without its key, as the model does
                cursor.execute(f"ALTER TABLE {q(table)} ALTER COLUMN {q(key)} DROP NOT NULL")
            unique = [names for _, kind, names in constraints if kind == "u"]
            if unique:
                # Keep the newest row of each set of values the plain table's unique constraint allows once.
                distinct = ", ".join(q(name) for name in _without_key(unique[0], key))
                cursor.execute(f"INSERT INTO {q(table)} ({listed}) SELECT DISTINCT ON ({distinct}) {listed} FROM {q(old)}"
                               f" ORDER BY {distinct}, {q(key)} DESC")
            else:
                cursor.execute(f"INSERT INTO {q(table)} ({listed}) SELECT {listed} FROM {q(old)}")
        for column in identity:
            cursor.execute(f"SELECT setval(pg_get_serial_sequence(%s, %s), COALESCE((SELECT max({q(column)}) FROM {q(table)}), 0) + 1, false)",
                           [table, column])
        cursor.execute(f"DROP TABLE {q(old)} CASCADE")
        for name, kind, names in constraints:
            names = list(names)
            if partitioned and key not in names:
                names.append(key)  # PostgreSQL: a partitioned table's unique keys contain the partition key
            elif not partitioned and kind == "u":
                names = _without_key(names, key)
            elif not partitioned and kind == "p":
                names = names[:1]
            clause = "PRIMARY KEY" if kind == "p" else "UNIQUE"
            cursor.execute(f"ALTER TABLE {q(table)} ADD CONSTRAINT {q(name)} {clause} ({', '.join(q(n) for n in names)})")
        for definition in index_definitions:
            cursor.execute(definition)
        for column in identity:
            # The new table's sequence takes the old one's name, which went with the old table.
            cursor.execute("SELECT pg_get_serial_sequence(%s, %s)", [table, column])
            sequence = cursor.fetchone()[0]
            wanted = f"{table}_{column}_seq"
            if sequence and sequence.split(".")[-1].strip('"') != wanted:
                cursor.execute(f"ALTER SEQUENCE {sequence} RENAME TO {q(wanted)}")
        cursor.execute(f"ANALYZE {q(table)}")
    forget()


def _without_key(names, key):
    """A unique constraint's columns as the plain table had them: the key taken off where
    partitioning added it (at the end)."""
    names = list(names)
    return names[:-1] if len(names) > 1 and names[-1] == key else names
