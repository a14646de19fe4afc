"""The periodic tasks benchmarks/periodic.py times: 500 beat entries — 350 nightly crontabs, 100
hourly ones, 40 every 15 minutes, 10 every 5 minutes — and a year of their runs (about 3.5
million jobs, on the schedule's own times) added to the dashboard benchmark's generated history,
so that the whole table holds `rows` jobs. A few entries misbehave now, as on a real site: one
fails its last runs, one missed last night, one ran for two hours on an hourly schedule, one
waits in its queue.

The runs are on fixed grids (a nightly entry at its minute of each day), so a reused database is
topped up with the runs due since it was generated, the year's oldest pruned, and the last day
generated again as of now (where the misbehaviour is)."""

import time
from datetime import UTC, datetime

from benchmarks.dashboard_data import DAY, connect, index_statements, log, make_days, run_statements, secondary_indexes

PERIODIC_VERSION = "periodic-data-1"  # change when the generator changes: the runs are generated again
RECENT = DAY  # generated again on every run, as of now
# The id of the first run: the generated history's ids stay below it.
FIRST_RUN_ID = 10_000_000_000

# Kind: (how many, seconds between runs, task, queue, runtime in seconds, failure share).
KINDS = [
    ("nightly report", 350, DAY, "reports.nightly_export", "reports", 40.0, 0.01),
    ("hourly rollup", 100, 3600, "analytics.rollup_hour", "default", 8.0, 0.005),
    ("partner sync", 40, 900, "partners.sync_catalogue", "partners", 3.0, 0.02),
    ("queue probe", 10, 300, "ops.probe_queue", "default", 0.2, 0.001),
]
# Entries that misbehave now (the detector's findings, the page's red marks).
FAILING, MISSED, OVERLAPPING, STUCK = "partner sync 003", "nightly report 007", "hourly rollup 011", "queue probe 002"


def entries():
    """[(name, task, queue, seconds between runs, offset in the period, runtime, failure share, kind)]
    — the offset puts a nightly entry at its own minute (crontab) and spreads the others."""
    found = []
    for label, count, every, task, queue, runtime, fail in KINDS:
        for n in range(count):
            if every == DAY:
                offset = ((n * 5) % 24) * 3600 + ((n * 7) % 60) * 60  # crontab(minute=…, hour=…)
            elif every == 3600:
                offset = (n % 60) * 60  # crontab(minute=…)
            else:
                offset = (n * 37) % every  # an interval, counted from beat's start
            found.append((f"{label} {n:03d}", task, queue, every, offset, runtime, fail, label))
    return found


def beat_schedule():
    """The entries as the Celery app's beat_schedule holds them."""
    from celery.schedules import crontab

    schedule = {}
    for name, task, queue, every, offset, _, _, _ in entries():
        if every == DAY:
            when = crontab(minute=(offset // 60) % 60, hour=offset // 3600)
        elif every == 3600:
            when = crontab(minute=offset // 60)
        else:
            when = float(every)
        schedule[name] = {"task": task, "schedule": when, "args": [name.rsplit(" ", 1)[1]], "options": {"queue": queue}}
    return schedule


ENTRIES_SQL = """
CREATE TABLE IF NOT EXISTS bench_periodic_entry (
    n int PRIMARY KEY, name text, task text, queue text, every int, "offset" int, runtime float8, fail float8)
"""

# One row per run due in [lo, hi), on the entry's grid; the misbehaving entries' last runs as of now.
RUNS_SQL = """
INSERT INTO monitors_jobexecution (
    task_id, task_name, state, progress, queue, exchange, routing_key, payload_hash, args, kwargs, retries,
    circuit, circuit_waits, enqueued_at, received_at, started_at, finished_at, runtime, worker, worker_pid,
    exception_type, error_target, error_kind, exception_message, traceback, result,
    parent_id, root_id, group_id, replay_of, origin_kind, origin_entry, origin_model, origin_pk, origin_save,
    origin_receiver, origin_deferred, origin_transaction, origin_request, origin_request_id, origin_task, updated_at)
SELECT md5('periodic:' || e.n || ':' || k)::uuid::text, e.task, s.state, 0,
    e.queue, '', e.queue, '', jsonb_build_array(right(e.name, 3)), '{}'::jsonb, 0, '', 0,
    to_timestamp(s.at), CASE WHEN s.state <> 'enqueued' THEN to_timestamp(s.at + s.wait) END,
    CASE WHEN s.state <> 'enqueued' THEN to_timestamp(s.at + s.wait) END,
    CASE WHEN s.state IN ('succeeded', 'failed') THEN to_timestamp(s.at + s.wait + s.rt) END,
    CASE WHEN s.state IN ('succeeded', 'failed') THEN s.rt END,
    CASE WHEN s.state = 'enqueued' THEN '' ELSE 'celery@worker-' || (1 + e.n %% 4) END,
    CASE WHEN s.state = 'enqueued' THEN NULL ELSE 4000 + e.n %% 8 END,
    CASE WHEN s.state = 'failed' THEN 'requests.exceptions.ConnectionError' ELSE '' END,
    CASE WHEN s.state = 'failed' THEN 'partner.example' ELSE '' END,
    CASE WHEN s.state = 'failed' THEN 'connection' ELSE '' END,
    CASE WHEN s.state = 'failed' THEN 'HTTPSConnectionPool(host=''partner.example'', port=443): Connection refused'
         ELSE '' END, '', CASE WHEN s.state = 'succeeded' THEN '1' ELSE '' END,
    '', '', '', '', 'beat', e.name, '', '', '', '', '', '', '', '', '',
    to_timestamp(s.at + s.wait + coalesce(s.rt, 0))
FROM bench_periodic_entry e,
     LATERAL generate_series(ceil((%(lo)s - e."offset") / e.every)::bigint,
                             ceil((%(hi)s - e."offset") / e.every)::bigint - 1) AS k,
     LATERAL (
        SELECT at, wait, rt,
            CASE
                WHEN e.name = %(stuck)s AND at > %(now)s - e.every THEN 'enqueued'
                WHEN e.name = %(overlapping)s AND at > %(now)s - 3 * e.every AND at <= %(now)s - 2 * e.every THEN 'succeeded'
                WHEN at + wait + rt > %(now)s THEN 'started'
                WHEN e.name = %(failing)s AND at > %(now)s - 4 * e.every THEN 'failed'
                WHEN random() < e.fail THEN 'failed'
                ELSE 'succeeded'
            END AS state
        FROM (SELECT k * e.every + e."offset" AS at,
                     CASE WHEN e.name = %(stuck)s AND k * e.every + e."offset" > %(now)s - e.every THEN 0
                          ELSE 0.005 + 0.05 * random() END AS wait,
                     CASE WHEN e.name = %(overlapping)s AND k * e.every + e."offset" > %(now)s - 3 * e.every
                               AND k * e.every + e."offset" <= %(now)s - 2 * e.every THEN 7200.0
                          ELSE e.runtime * exp(0.5 * (random() + random() - 1)) END AS rt) AS r
     ) AS s
WHERE NOT (e.name = %(missed)s AND s.at > %(now)s - e.every - 6 * 3600)
"""


def read_version(name):
    with connect(name) as connection:
        exists = connection.execute("SELECT to_regclass('bench_periodic')").fetchone()[0]
        if not exists:
            return None
        row = connection.execute("SELECT version, generated_until, days FROM bench_periodic").fetchone()
    return row


def add_runs(name, days=365, jobs=2):
    """Add `days` of the entries' runs to database `name` (or top them up); the number of runs now.
    A first generation drops the table's secondary indexes, inserts a month per connection and
    builds them again (as the dashboard generator does): row by row through 17 indexes is ten
    times slower."""
    span = days * DAY
    now = time.time()
    started = time.perf_counter()
    marker = read_version(name)
    fresh = marker is None or marker[0] != PERIODIC_VERSION or marker[2] != days
    parameters = {"now": now, "failing": FAILING, "missed": MISSED, "overlapping": OVERLAPPING, "stuck": STUCK}
    with connect(name) as connection:
        if fresh:
            log(f"Adding {days} days of 500 periodic tasks' runs to {name}…")
            connection.execute("DROP TABLE IF EXISTS bench_periodic, bench_periodic_entry")
            connection.execute("DELETE FROM monitors_jobexecution WHERE id >= %s", [FIRST_RUN_ID])
            connection.execute(ENTRIES_SQL)
            with connection.cursor() as cursor:
                cursor.executemany("INSERT INTO bench_periodic_entry VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                                   [(n, *entry[:7]) for n, entry in enumerate(entries())])
            # The runs' ids from FIRST_RUN_ID on: apart from the generated history's.
            connection.execute("SELECT setval(pg_get_serial_sequence('monitors_jobexecution', 'id'), %s, false)",
                               [FIRST_RUN_ID])
            indexes = secondary_indexes(connection, "monitors_jobexecution")
            for drop, _, _ in indexes:
                connection.execute(drop)
    make_days(now - span, now)
    if fresh:
        month = 30 * DAY
        chunks = [(f"runs from {datetime.fromtimestamp(lo, UTC):%Y-%m-%d}", RUNS_SQL,
                   {**parameters, "lo": lo, "hi": min(lo + month, now)}) for lo in range(int(now - span), int(now), month)]
        chunks[0][2]["lo"] = now - span
        run_statements(name, chunks, jobs, settings=["SET synchronous_commit = off"])
        log("  indexes again:")
        run_statements(name, index_statements(indexes), jobs, settings=["SET maintenance_work_mem = '1GB'", "SET max_parallel_maintenance_workers = 0"])
        with connect(name) as connection:
            for _, _, then in indexes:
                if then:
                    connection.execute(then)
    with connect(name) as connection:
        connection.execute("SET synchronous_commit = off")
        if not fresh:
            # The last day again as of now (the misbehaving runs move with it), the runs due since.
            lo = min(marker[1], now) - RECENT
            connection.execute("DELETE FROM monitors_jobexecution WHERE id >= %s AND (enqueued_at >= to_timestamp(%s)"
                               " OR enqueued_at < to_timestamp(%s))", [FIRST_RUN_ID, lo, now - span])
            connection.execute(RUNS_SQL, {**parameters, "lo": lo, "hi": now})
        # The marker last: a generation cut short is done again from the start.
        connection.execute("CREATE TABLE IF NOT EXISTS bench_periodic (version text, generated_until float8, days int)")
        connection.execute("DELETE FROM bench_periodic")
        connection.execute("INSERT INTO bench_periodic VALUES (%s, %s, %s)", [PERIODIC_VERSION, now, days])
        connection.execute("ANALYZE monitors_jobexecution")
        runs = connection.execute("SELECT count(*) FROM monitors_jobexecution WHERE id >= %s", [FIRST_RUN_ID]).fetchone()[0]
    log(f"  {runs:,} runs of periodic tasks, {'generated' if fresh else 'topped up'} in {time.perf_counter() - started:.0f}s")
    return runs


def expected_runs(days=365):
    """How many runs `days` of the schedule hold (to size the rest of the history)."""
    return sum(count * days * DAY // every for _, count, every, *_ in KINDS)
