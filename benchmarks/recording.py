"""What recording costs a Celery worker: no-op task throughput, three ways, through a real Redis
broker and a real prefork worker (concurrency 2).

- plain:    Jobwatch's recorder off, no result backend;
- recorder: Jobwatch's recorder on, writing to PostgreSQL;
- no-search: the recorder again, with the jobs list's text-search (trigram) indexes dropped for
            the run: the difference from `recorder` is what those indexes cost the writes;
- peer:     recorder off, django-celery-results (result_backend "django-db", result_extended).

Each run empties the broker's Redis database and the tables, publishes N tasks from a publisher
process with the mode's settings (timed: publish throughput), then starts the worker on the full
queue and times it from the first task's start to the last task's finish (execution throughput).
Filling the queue first keeps the two figures apart: the publisher never competes with the worker
for the machine's two cores, worker start-up is not counted, and the worker runs saturated, which
is where a per-task cost shows. The database server's CPU (every PostgreSQL process, from the
publish to the last row written) is read per task in every mode. The moment the N-th task finishes is read exactly from a probe in
each pool process (benchmarks/apps.py), identical in every mode. For the recorder, the write lag
is how long after that moment all N rows were in JobExecution as succeeded.

Modes run in rotated order, several rounds; the figures are the medians.

Then the lag at the demo's storm rate: with the recorder on and the worker already running, a
publisher process sends no-op jobs at the rate a storm of `manage.py rundemo` enqueues (derived from
demo/workload.py and rundemo's DEMO_TROUBLE, ~82 jobs/s for 20 s), while this process polls
JobExecution every 50 ms. Per job: how long after it finished (finished_at, the worker's clock) its
row first read as finished, and how long after its publish its row first existed; and, at each
poll during the storm, how many of the 50 newest rows (the jobs list's first page) still read as
not finished although the job had finished.

    .venv/bin/python benchmarks/recording.py            # the figure the README quotes
    .venv/bin/python benchmarks/recording.py --quick    # a ~1 min smoke run
    .venv/bin/python benchmarks/recording.py --lag-only # the storm lag alone, ~35 s

The last line printed is one line of JSON. The exit status is non-zero only when the benchmark
itself failed (a service is down, a worker died, a task went missing), never for a missed target.
"""

import argparse
import heapq
import itertools
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from benchmarks.harness import (  # noqa: E402
    TEXT_SEARCH_INDEXES,
    CONCURRENCY,
    DB_REUSE_MAX,
    ROOT,
    Bench,
    BenchmarkError,
    Worker,
    code_fingerprint,
    code_version,
    cpu_used,
    machine_busy_share,
    machine_description,
    postgres_cpu,
    publish,
    wait_for_tasks,
)

MODES = ("plain", "recorder", "no-search", "peer")
# The modes with the recorder on; "no-search" differs only in the indexes the database keeps.
RECORDING = ("recorder", "no-search")
TARGET_RECORDER_RATIO = 0.90
# What the recorder may cost where the application runs: its publishes, and the worker's CPU.
TARGET_PUBLISH_RATIO = 0.95
TARGET_WORKER_CPU_RATIO = 1.05
# About 3.5 minutes on a 2-core machine, half of it the peer (~60 tasks/s there). Fewer tasks make
# the recorder look cheaper than it is: its writer threads can finish after the last task.
DEFAULT_TASKS = 1_500
DEFAULT_ROUNDS = 3
QUICK_TASKS = 300
QUICK_ROUNDS = 1
QUICK_STORM_SECONDS = 10.0
# Longest wait for the recorder's rows after the last task (the lag is seconds, even when slow).
ROWS_TIMEOUT = 45.0
# Other work above this share of the CPU just before a run is reported with the figures.
BUSY_WARNING = 0.15
TABLES = ["monitors_jobexecution", "monitors_recorderprocess", "django_celery_results_taskresult"]

# The demo's storm, as `manage.py rundemo` runs it: demo_workload at rundemo's --rate (default 5
# actions a second), with DEMO_TROUBLE's --storm 20 (seconds) and --rollbacks 0.05.
# In a storm, visits come STORM_FACTOR (10) times as fast and the rest of the shop carries on
# (demo/workload.py: action_mix, actions_per_second): 27.5 actions/s. Jobs each action enqueues
# (demo/receivers.py, demo/workload.py): a sign-up or a visit saves a Customer, whose three
# receivers enqueue three jobs; an order enqueues reserve_inventory, send_order_confirmation and
# charge_payment (only reserve_inventory when its transaction rolls back); a shipment one job. The
# rate itself is derived at run time, in the publisher, from those modules (demo_storm below).
JOBS_PER_ACTION = {"create customer": 3, "visit": 3, "place order": 3, "ship order": 1}
JOBS_PER_ROLLED_BACK_ORDER = 1
STORM_MAX_SECONDS = 30.0
# Published at the storm's rate before it, to have the worker's pool processes and writers going
# (a storm hits a running worker); these jobs are left out of the figures.
STORM_WARMUP_SECONDS = 2.0
LAG_POLL_SECONDS = 0.05
NEWEST_PAGE = 50  # the jobs list's first page (monitors/web/jobs.py PAGE_SIZE), newest id first
TERMINAL_STATES = ("succeeded", "failed", "revoked", "rejected")
# The recorder promises that RECORDER_FLUSH_INTERVAL is "the longest an event waits before it is
# written" (monitors/conf.py). The target: 95 % of jobs read as finished within that interval plus
# this allowance for the write itself and this benchmark's 50 ms poll.
LAG_TARGET_ALLOWANCE = 0.25


def parse_arguments():
    parser = argparse.ArgumentParser(description="No-op task throughput: plain Celery, Jobwatch's recorder, django-celery-results.")
    parser.add_argument("--tasks", type=int, default=None, help=f"tasks per run (default {DEFAULT_TASKS:,}; {QUICK_TASKS:,} with --quick)")
    parser.add_argument("--rounds", type=int, default=None, help=f"runs of each mode, in rotated order (default {DEFAULT_ROUNDS}; {QUICK_ROUNDS} with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help=f"a ~1 min smoke run: fewer tasks, one round, a {QUICK_STORM_SECONDS:g} s storm")
    parser.add_argument("--reuse-db-connections", action="store_true",
                        help=f"set CELERY_DB_REUSE_MAX={DB_REUSE_MAX} in every mode, so Celery stops closing database connections "
                             "(and the connection pool) around every task: the peer's best case")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432", help="PostgreSQL server URL, without a database name")
    parser.add_argument("--database", default="jobwatch_bench", help="database to (re)create and migrate for the benchmark; dropped first if it exists (default jobwatch_bench)")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379", help="Redis server URL, without a db number")
    parser.add_argument("--redis-db", type=int, default=15, help="Redis database number for the broker; flushed before every run (default 15)")
    parser.add_argument("--lag-only", action="store_true", help="only the lag at the demo's storm rate (no throughput runs)")
    parser.add_argument("--no-lag", action="store_true", help="only the throughput runs (no storm lag)")
    parser.add_argument("--storm-rate", type=float, default=None,
                        help="jobs a second in the lag run (default: the demo's storm rate, derived from demo/ at run time)")
    parser.add_argument("--storm-seconds", type=float, default=None,
                        help=f"length of the lag run's storm (default: the demo's, at most {STORM_MAX_SECONDS:g} s)")
    parser.add_argument("--storm-publisher", default=None, help=argparse.SUPPRESS)  # internal: run as the publisher
    arguments = parser.parse_args()
    if arguments.storm_publisher:
        return arguments
    if arguments.lag_only and arguments.no_lag:
        parser.error("--lag-only and --no-lag exclude each other")
    if arguments.quick and arguments.storm_seconds is None:
        arguments.storm_seconds = QUICK_STORM_SECONDS
    if (arguments.storm_rate is not None and arguments.storm_rate <= 0) or (arguments.storm_seconds is not None and arguments.storm_seconds <= 0):
        parser.error("--storm-rate and --storm-seconds must be above 0")
    arguments.tasks = arguments.tasks or (QUICK_TASKS if arguments.quick else DEFAULT_TASKS)
    arguments.rounds = arguments.rounds or (QUICK_ROUNDS if arguments.quick else DEFAULT_ROUNDS)
    if arguments.tasks < 1 or arguments.rounds < 1:
        parser.error("--tasks and --rounds must be at least 1")
    return arguments


SUCCEEDED_ROWS = "SELECT count(*) FROM monitors_jobexecution WHERE state = 'succeeded'"


def wait_for_rows(bench, timeout):
    """When all N jobs were in JobExecution as succeeded (time.time()), or None after `timeout`."""
    deadline = time.monotonic() + timeout
    while bench.count(SUCCEEDED_ROWS) < bench.tasks:
        if time.monotonic() > deadline:
            return None
        time.sleep(0.02)
    return time.time()


def check_rows(bench, mode, expected=None):
    """What each mode should have stored, exactly: (failures, notes), both lists of sentences."""
    n = bench.tasks if expected is None else expected
    failures, notes = [], []
    if mode in RECORDING:
        total = bench.count("SELECT count(*) FROM monitors_jobexecution")
        succeeded = bench.count(SUCCEEDED_ROWS)
        complete = bench.count(
            "SELECT count(*) FROM monitors_jobexecution WHERE state = 'succeeded' AND enqueued_at IS NOT NULL"
            " AND received_at IS NOT NULL AND started_at IS NOT NULL AND finished_at IS NOT NULL"
        )
        lost = bench.count(
            "SELECT coalesce(sum(events_dropped_overflow + events_dropped_error + capture_errors), 0) FROM monitors_recorderprocess"
        )
        if (total, succeeded, complete) != (n, n, n):
            failures.append(f"JobExecution has {total} rows, {succeeded} succeeded, {complete} with all four timestamps; expected {n}")
        if lost:
            failures.append(f"RecorderProcess counts {lost} events dropped or not captured")
        # Not failures (a failed batch is kept and retried), but they explain a long write lag.
        for errors, last_error in bench.db.execute(
            "SELECT write_errors, last_error FROM monitors_recorderprocess WHERE write_errors > 0 ORDER BY pid"
        ):
            notes.append(f"{errors} failed write(s) retried in one process, the last: {last_error[:160]}")
    elif mode == "peer":
        stored = bench.count("SELECT count(*) FROM django_celery_results_taskresult WHERE status = 'SUCCESS'")
        if stored != n:
            failures.append(f"django-celery-results stored {stored} successful results; expected {n}")
    if mode not in RECORDING and bench.count("SELECT count(*) FROM monitors_jobexecution"):
        failures.append("the recorder wrote rows while switched off")
    return failures, notes


# Text-search indexes taken away for a no-search run, by name: their definitions, to put back.
def run_once(bench, mode):
    bench.reset(TABLES)
    text_indexes = TEXT_SEARCH_INDEXES.keep(bench.db, keep=mode != "no-search")
    busy_before = machine_busy_share()
    db_before = postgres_cpu()
    timing = publish(bench, mode)
    probe_dir = Path(tempfile.mkdtemp(prefix=f"probe-{mode}-", dir=bench.scratch))
    worker = Worker(bench, mode, probe_dir)
    rows_at = None
    try:
        first_started, last_finished, cpu_start = wait_for_tasks(bench, worker, probe_dir, timeout=max(120.0, bench.tasks / 10))
        if mode in RECORDING:
            # Measured before stopping the worker: its shutdown flushes the recorder at once.
            rows_at = wait_for_rows(bench, timeout=ROWS_TIMEOUT)
        # For the recorder this includes writing every row, whenever the writer threads did it.
        cpu_end = worker.cpu_seconds()
        db_seconds = cpu_used(db_before, postgres_cpu())
    finally:
        worker.stop()
    execute_seconds = last_finished - first_started
    failures, notes = check_rows(bench, mode)
    result = {
        "mode": mode,
        "publish_per_s": bench.tasks / timing["publish_seconds"],
        "execute_per_s": bench.tasks / execute_seconds,
        "execute_s": execute_seconds,
        "cpu_ms_per_task": None if None in (cpu_start, cpu_end) else (cpu_end - cpu_start) * 1000 / bench.tasks,
        "db_cpu_ms_per_task": db_seconds * 1000 / bench.tasks,
        "text_search_indexes": text_indexes,
        "write_lag_s": None if rows_at is None else max(rows_at - last_finished, 0.0),
        "machine_busy_before": busy_before,
        "failures": failures,
        "notes": notes,
    }
    if mode == "no-search" and text_indexes:
        result["failures"].append(f"{text_indexes} text-search indexes were still there")
    if mode == "recorder" and not text_indexes:
        result["notes"].append("the jobs table has no text-search indexes (is pg_trgm missing?): recorder and no-search are the same")
    if mode in RECORDING and rows_at is None:
        result["failures"].insert(0, f"not all rows were succeeded in JobExecution {ROWS_TIMEOUT:.0f} s after the last task finished")
    return result


# --- Lag at the demo's storm rate -------------------------------------------------------------


def demo_storm():
    """(jobs a second, seconds, how) of a storm of `manage.py rundemo`, from the demo's own code.
    Runs in the publisher, where Django is set up (demo/workload.py imports the shop's models)."""
    from demo.management.commands.rundemo import DEMO_TROUBLE
    from demo.management.commands.rundemo import Command as RunDemo
    from demo.workload import STORM_FACTOR, action_mix, actions_per_second

    def option(name, default):
        return float(DEMO_TROUBLE[DEMO_TROUBLE.index(name) + 1]) if name in DEMO_TROUBLE else default

    rollbacks = option("--rollbacks", 0.0)
    per_action = dict(JOBS_PER_ACTION)
    per_action["place order"] = (1 - rollbacks) * JOBS_PER_ACTION["place order"] + rollbacks * JOBS_PER_ROLLED_BACK_ORDER
    rate = RunDemo().create_parser("manage.py", "rundemo").get_default("rate")
    mix = action_mix(True)
    actions = actions_per_second(rate, True)
    jobs = actions * sum(share * per_action[action] for action, share in mix.items()) / sum(mix.values())
    seconds = option("--storm", 0.0)
    how = (f"manage.py rundemo: demo_workload --rate {rate:g} --storm {seconds:g}: visits x{STORM_FACTOR}, "
           f"{actions:.1f} actions/s, {jobs / actions:.2f} jobs per action")
    return jobs, seconds, how


def storm_publisher(arguments):
    """The publisher of the lag run (a process of its own, with the recorder's settings): no-op
    jobs at a steady rate, the first STORM_WARMUP_SECONDS of them a warm-up; it writes each job's
    id and publish time (time.time()) to the file named by --storm-publisher."""
    import django

    django.setup()
    import dashboard.celery  # noqa: F401  (the app the site publishes with)
    from demo.tasks import noop
    from monitors.conf import setting
    from monitors.recording import signals

    demo_rate, demo_seconds, how = demo_storm()
    rate = arguments.storm_rate or demo_rate
    seconds = arguments.storm_seconds or min(demo_seconds, STORM_MAX_SECONDS)
    warmup = round(rate * STORM_WARMUP_SECONDS)
    total = warmup + round(rate * seconds)
    jobs, most_behind = [], 0.0
    started = time.monotonic()
    for index in range(total):
        wait = started + index / rate - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        else:
            most_behind = max(most_behind, -wait)
        published_at = time.time()
        jobs.append((noop.delay().id, published_at))
    publish_seconds = time.monotonic() - started
    # A web process carries on after a storm: its writer thread writes the last enqueues on its
    # own schedule, as it wrote the others; an exit flush right away would flatter them.
    time.sleep(2 * setting("RECORDER_FLUSH_INTERVAL") + 0.5)
    signals.flush_at_shutdown()
    Path(arguments.storm_publisher).write_text(json.dumps({
        "rate": rate, "seconds": seconds, "demo_rate": demo_rate, "demo_seconds": demo_seconds, "how": how,
        "warmup": warmup, "jobs": jobs, "publish_seconds": publish_seconds, "most_behind_s": most_behind,
        "flush_interval": setting("RECORDER_FLUSH_INTERVAL"), "batch_size": setting("RECORDER_BATCH_SIZE"),
    }))
    return 0


def wait_for_worker(bench, worker, timeout=60.0):
    """Until the worker's main process has written its recorder row (at worker_ready)."""
    deadline = time.monotonic() + timeout
    while not bench.count("SELECT count(*) FROM monitors_recorderprocess WHERE node <> ''"):
        worker.check_alive()
        if time.monotonic() > deadline:
            raise BenchmarkError(f"the worker was not ready within {timeout:.0f} s:\n{worker.log_tail()}")
        time.sleep(0.05)


def percentiles(values):
    """p50, p95 and max, by linear interpolation between the closest ranks."""
    if not values:
        return {"p50": None, "p95": None, "max": None}
    ordered = sorted(values)

    def at(share):
        position = share * (len(ordered) - 1)
        low = int(position)
        high = min(low + 1, len(ordered) - 1)
        return ordered[low] + (ordered[high] - ordered[low]) * (position - low)

    return {"p50": at(0.50), "p95": at(0.95), "max": ordered[-1]}


LAG_ROWS = "SELECT id, task_id, state FROM monitors_jobexecution"


def storm_lag(bench, arguments):
    """Publish at the storm's rate to a running worker while polling JobExecution; see the module's
    docstring. Returns the figures, with "failures" and "notes" as run_once does."""
    bench.reset(TABLES)
    busy_before = machine_busy_share()
    probe_dir = Path(tempfile.mkdtemp(prefix="probe-storm-", dir=bench.scratch))
    jobs_path = bench.scratch / "storm-jobs.json"
    publisher_log = bench.scratch / "storm-publisher.log"
    first_seen, first_finished, samples, polls = {}, {}, [], []
    failures = []
    worker = Worker(bench, "recorder", probe_dir)
    try:
        wait_for_worker(bench, worker)
        command = [sys.executable, str(Path(__file__).resolve()), "--storm-publisher", str(jobs_path)]
        if arguments.storm_rate:
            command += ["--storm-rate", repr(arguments.storm_rate)]
        if arguments.storm_seconds:
            command += ["--storm-seconds", repr(arguments.storm_seconds)]
        with publisher_log.open("wb") as log:
            publisher = subprocess.Popen(command, cwd=ROOT, env=bench.environment("recorder"), stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        storm, expected, deadline = None, None, None
        # The publisher's storm, its warm-up and its writer's last flushes, with room for its start.
        publisher_deadline = time.monotonic() + (arguments.storm_seconds or STORM_MAX_SECONDS) + STORM_WARMUP_SECONDS + 60
        try:
            while True:
                at = time.time()  # the query's snapshot is taken as it starts
                rows = bench.db.execute(LAG_ROWS).fetchall()
                polls.append(at)
                for _, task_id, state in rows:
                    if task_id not in first_seen:
                        first_seen[task_id] = at
                    if state in TERMINAL_STATES and task_id not in first_finished:
                        first_finished[task_id] = at
                samples.append((at, [(task_id, state) for _, task_id, state in heapq.nlargest(NEWEST_PAGE, rows)]))
                if storm is None and publisher.poll() is not None:
                    if publisher.returncode != 0:
                        raise BenchmarkError(f"the storm's publisher exited with status {publisher.returncode}:\n"
                                             f"{publisher_log.read_text(errors='replace')[-3000:]}")
                    storm = json.loads(jobs_path.read_text())
                    expected = [task_id for task_id, _ in storm["jobs"]]
                    deadline = time.monotonic() + ROWS_TIMEOUT
                if storm is None and time.monotonic() > publisher_deadline:
                    raise BenchmarkError(f"the storm's publisher did not finish in time:\n"
                                         f"{publisher_log.read_text(errors='replace')[-3000:]}")
                if expected is not None:
                    if all(task_id in first_finished for task_id in expected):
                        break
                    if time.monotonic() > deadline:
                        missing = sum(task_id not in first_finished for task_id in expected)
                        failures.append(f"{missing} jobs were not finished in JobExecution {ROWS_TIMEOUT:.0f} s after the storm")
                        break
                worker.check_alive()
                time.sleep(max(LAG_POLL_SECONDS - (time.time() - at), 0.0))
        finally:
            if publisher.poll() is None:
                os.killpg(publisher.pid, signal.SIGKILL)
                publisher.wait()
        finished_at = {task_id: moment.timestamp() for task_id, moment in bench.db.execute(
            "SELECT task_id, finished_at FROM monitors_jobexecution WHERE finished_at IS NOT NULL")}
    finally:
        worker.stop()
    more_failures, notes = check_rows(bench, "recorder", expected=len(expected))
    failures += more_failures

    storm_jobs = storm["jobs"][storm["warmup"]:]
    finish_lags = [first_finished[task_id] - finished_at[task_id] for task_id, _ in storm_jobs
                   if task_id in first_finished and task_id in finished_at]
    enqueue_lags = [first_seen[task_id] - published for task_id, published in storm_jobs if task_id in first_seen]
    # The jobs list during the storm: rows that read enqueued, received or started at a poll
    # although their job had finished (by the worker's clock) before that poll.
    storm_began, storm_ended = storm_jobs[0][1], storm_jobs[-1][1]
    stale, enqueued, shown = [], [], []
    longest_half_stale, half_stale_since = 0.0, None
    for at, page in samples:
        if not storm_began <= at <= storm_ended:
            continue
        done = [(task_id, state) for task_id, state in page if state not in TERMINAL_STATES and finished_at.get(task_id, at + 1) <= at]
        stale.append(len(done))
        enqueued.append(sum(state == "enqueued" for _, state in done))
        shown.append(len(page))
        if page and len(done) * 2 >= len(page):
            half_stale_since = at if half_stale_since is None else half_stale_since
            longest_half_stale = max(longest_half_stale, at - half_stale_since + LAG_POLL_SECONDS)
        else:
            half_stale_since = None
    gaps = [later - earlier for earlier, later in itertools.pairwise(polls)]
    target = storm["flush_interval"] + LAG_TARGET_ALLOWANCE
    finish, enqueue = percentiles(finish_lags), percentiles(enqueue_lags)
    return {
        "rate_per_s": storm["rate"],
        "seconds": storm["seconds"],
        "demo_rate_per_s": storm["demo_rate"],
        "demo_seconds": storm["demo_seconds"],
        "how": storm["how"],
        "jobs": len(storm_jobs),
        "warmup_jobs": storm["warmup"],
        "published_per_s": len(storm["jobs"]) / storm["publish_seconds"],
        "publisher_most_behind_s": storm["most_behind_s"],
        "flush_interval_s": storm["flush_interval"],
        "batch_size": storm["batch_size"],
        "finish_lag_s": finish,
        "enqueue_lag_s": enqueue,
        "target_p95_s": target,
        "meets_target": None not in (finish["p95"], enqueue["p95"]) and finish["p95"] <= target and enqueue["p95"] <= target,
        "stale_share": sum(stale) / sum(shown) if sum(shown) else None,
        "stale_max": max(stale, default=None),
        "enqueued_share": sum(enqueued) / sum(shown) if sum(shown) else None,
        "enqueued_max": max(enqueued, default=None),
        "stale_polls": len(shown),
        # How often a look at the list (it refreshes every 10 s) would have found half of it stale.
        "polls_half_stale": sum(page and count * 2 >= page for count, page in zip(stale, shown, strict=True)) / len(shown) if shown else None,
        "longest_half_stale_s": longest_half_stale,
        "poll_interval_s": statistics.mean(gaps) if gaps else None,
        "machine_busy_before": busy_before,
        "failures": failures,
        "notes": notes,
    }


def describe_storm_run(storm):
    line = (f"storm     {storm['jobs']:,} jobs at {storm['rate_per_s']:.1f}/s for {storm['seconds']:g} s "
            f"(published at {storm['published_per_s']:.1f}/s)  finished->row p95 {storm['finish_lag_s']['p95'] or 0:.2f} s  "
            f"published->row p95 {storm['enqueue_lag_s']['p95'] or 0:.2f} s")
    if storm["machine_busy_before"] is not None and storm["machine_busy_before"] > BUSY_WARNING:
        line += f"  (machine {storm['machine_busy_before']:.0%} busy before the run)"
    return line


def print_storm(storm):
    finish, enqueue, target = storm["finish_lag_s"], storm["enqueue_lag_s"], storm["target_p95_s"]

    def seconds(value):
        return "-" if value is None else f"{value:.2f} s"

    print()
    demo = (storm["rate_per_s"], storm["seconds"]) == (storm["demo_rate_per_s"], storm["demo_seconds"])
    title = "Lag at the demo's storm rate" if demo else "Lag in a storm of the rate given"
    print(f"{title}: {storm['rate_per_s']:.1f} no-op jobs/s for {storm['seconds']:g} s "
          f"({storm['jobs']:,} jobs, after {storm['warmup_jobs']} warm-up), recorder on, prefork worker, "
          f"concurrency {CONCURRENCY}; JobExecution polled every {(storm['poll_interval_s'] or 0) * 1000:.0f} ms")
    print(f"storm rate from {storm['how']}: {storm['demo_rate_per_s']:.1f} jobs/s for {storm['demo_seconds']:g} s")
    print(f"recorder: RECORDER_FLUSH_INTERVAL {storm['flush_interval_s']:g} s, RECORDER_BATCH_SIZE {storm['batch_size']}")
    print(f"{'lag':<24}{'p50':>9}{'p95':>9}{'max':>9}{'p95/target':>12}")
    for name, figures in (("finished -> row shows it", finish), ("published -> row exists", enqueue)):
        print(f"{name:<24}{seconds(figures['p50']):>9}{seconds(figures['p95']):>9}{seconds(figures['max']):>9}"
              f"{ratio(figures['p95'], target) or 0:>12.3f}")
    print(f"lag: target p95 <= {target:.2f} s (RECORDER_FLUSH_INTERVAL + {LAG_TARGET_ALLOWANCE:g} s): "
          f"{'met' if storm['meets_target'] else 'MISSED'}")
    if storm["stale_share"] is not None:
        print(f"jobs list during the storm ({storm['stale_polls']} polls): of the {NEWEST_PAGE} newest rows, "
              f"{storm['stale_share']:.0%} read as not finished although the job had finished "
              f"(worst poll {storm['stale_max']}/{NEWEST_PAGE}; at least half of them in {storm['polls_half_stale']:.0%} "
              f"of the polls, for {storm['longest_half_stale_s']:.2f} s at the longest); "
              f"as 'enqueued' {storm['enqueued_share']:.0%} (worst {storm['enqueued_max']}/{NEWEST_PAGE})")
    if storm["publisher_most_behind_s"] > 0.25:
        print(f"WARNING the publisher fell up to {storm['publisher_most_behind_s']:.2f} s behind the storm's schedule")
    if storm["machine_busy_before"] is not None and storm["machine_busy_before"] > BUSY_WARNING:
        print(f"WARNING other work used {storm['machine_busy_before']:.0%} of the CPU just before the storm run")
    for failure in storm["failures"]:
        print(f"FAILURE storm: {failure}")


def storm_keys(storm):
    """The storm's figures for the JSON line."""
    if storm is None:
        return {"storm_lag_p95_s": None, "target_storm_lag_p95_s": None, "storm_lag_meets_target": None, "storm_lag": None}
    finish, enqueue = storm["finish_lag_s"], storm["enqueue_lag_s"]
    return {
        "storm_lag_p95_s": rounded(finish["p95"], 3),
        "target_storm_lag_p95_s": storm["target_p95_s"],
        "storm_lag_meets_target": storm["meets_target"],
        "storm_lag": {
            "rate_per_s": rounded(storm["rate_per_s"], 2),
            "seconds": storm["seconds"],
            "jobs": storm["jobs"],
            "demo_rate_per_s": rounded(storm["demo_rate_per_s"], 2),
            "demo_seconds": storm["demo_seconds"],
            "flush_interval_s": storm["flush_interval_s"],
            "batch_size": storm["batch_size"],
            "finish_lag_s": {key: rounded(value, 3) for key, value in finish.items()},
            "enqueue_lag_s": {key: rounded(value, 3) for key, value in enqueue.items()},
            "finish_p95_ratio": ratio(finish["p95"], storm["target_p95_s"]),
            "enqueue_p95_ratio": ratio(enqueue["p95"], storm["target_p95_s"]),
            "newest_50_stale_share": rounded(storm["stale_share"], 3),
            "newest_50_stale_max": storm["stale_max"],
            "newest_50_enqueued_share": rounded(storm["enqueued_share"], 3),
            "newest_50_enqueued_max": storm["enqueued_max"],
            "newest_50_polls_half_stale": rounded(storm["polls_half_stale"], 3),
            "newest_50_longest_half_stale_s": rounded(storm["longest_half_stale_s"], 2),
            "polls": storm["stale_polls"],
            "poll_interval_s": rounded(storm["poll_interval_s"], 3),
            "machine_busy_before": rounded(storm["machine_busy_before"], 3),
            "failures": storm["failures"],
        },
    }


def rotated(modes, round_index):
    shift = round_index % len(modes)
    return modes[shift:] + modes[:shift]


def median_of(runs, mode, key):
    values = [run[key] for run in runs if run["mode"] == mode and run[key] is not None]
    return statistics.median(values) if values else None


def ratio(value, baseline):
    return None if value is None or not baseline else round(value / baseline, 3)


def rounded(value, digits=1):
    return None if value is None else round(value, digits)


THROUGHPUT_KEYS = [
    "plain_per_s", "recorder_per_s", "peer_per_s", "recorder_ratio", "peer_ratio", "target_recorder_ratio", "recorder_meets_target",
    "recorder_beats_peer", "recorder_write_lag_s", "recorder_rows_exact", "recorder_runs_with_write_errors", "publish",
    "worker_cpu_ms_per_task", "worker_cpu_ratio", "target_publish_ratio", "target_worker_cpu_ratio", "db_cpu_ms_per_task",
    "text_search_write_cost", "runs_per_s", "machine_busy_max",
]


def summarise(bench, runs, rounds, storm):
    if runs:
        summary = summarise_throughput(bench, runs, rounds)
    else:  # --lag-only
        summary = {"benchmark": "recording", "tasks": None, "rounds": 0, "concurrency": CONCURRENCY, "db_reuse_max": bench.db_reuse_max,
                   **dict.fromkeys(THROUGHPUT_KEYS), "failures": []}
    if storm is not None:
        print_storm(storm)
        summary["failures"] += [f"storm: {failure}" for failure in storm["failures"]]
    tail = {key: summary.pop(key, None) for key in ("code", "date", "machine")}
    summary.update(storm_keys(storm))
    summary.update(code=tail["code"] or code_version(), date=tail["date"] or datetime.now(UTC).isoformat(timespec="seconds"),
                   machine=tail["machine"] or machine_description(bench))
    return summary


def summarise_throughput(bench, runs, rounds):
    execute = {mode: median_of(runs, mode, "execute_per_s") for mode in MODES}
    publish_rates = {mode: median_of(runs, mode, "publish_per_s") for mode in MODES}
    cpu = {mode: median_of(runs, mode, "cpu_ms_per_task") for mode in MODES}
    db_cpu = {mode: median_of(runs, mode, "db_cpu_ms_per_task") for mode in MODES}
    lag = {mode: median_of(runs, mode, "write_lag_s") for mode in RECORDING}
    failures = [f"{run['mode']}: {failure}" for run in runs for failure in run["failures"]]
    busy = [run["machine_busy_before"] for run in runs if run["machine_busy_before"] is not None]
    disturbed = sum(share > BUSY_WARNING for share in busy)
    recorder_ratio = ratio(execute["recorder"], execute["plain"])
    peer_ratio = ratio(execute["peer"], execute["plain"])
    meets_target = recorder_ratio >= TARGET_RECORDER_RATIO
    beats_peer = execute["recorder"] > execute["peer"]

    print()
    print(f"{bench.tasks:,} no-op tasks per run, Redis broker, prefork worker, concurrency {CONCURRENCY}; "
          f"median of {rounds} run{'s' if rounds > 1 else ''} per mode"
          + (f"; CELERY_DB_REUSE_MAX={bench.db_reuse_max}" if bench.db_reuse_max else ""))
    print(f"{'mode':<10}{'publish/s':>11}{'vs plain':>10}{'execute/s':>11}{'vs plain':>10}{'worker CPU/task':>17}"
          f"{'DB CPU/task':>13}{'write lag':>11}")
    for mode in MODES:
        lag_text = f"{lag[mode]:.2f} s" if lag.get(mode) is not None else "-"
        cpu_text = "-" if cpu[mode] is None else f"{cpu[mode]:.2f} ms"
        db_text = "-" if db_cpu[mode] is None else f"{db_cpu[mode]:.3f} ms"
        print(
            f"{mode:<10}{publish_rates[mode]:>11,.0f}{ratio(publish_rates[mode], publish_rates['plain']):>10.3f}"
            f"{execute[mode]:>11,.0f}{ratio(execute[mode], execute['plain']):>10.3f}{cpu_text:>17}{db_text:>13}{lag_text:>11}"
        )
    print(f"execution: recorder/plain {recorder_ratio:.3f} (target >= {TARGET_RECORDER_RATIO:.2f}: "
          f"{'met' if meets_target else 'MISSED'}), peer/plain {peer_ratio:.3f}; "
          f"the recorder {'beats' if beats_peer else 'DOES NOT beat'} the peer")
    publish_ratio, cpu_ratio = ratio(publish_rates["recorder"], publish_rates["plain"]), ratio(cpu["recorder"], cpu["plain"])
    print(f"publish:   recorder/plain {publish_ratio:.3f} (target >= {TARGET_PUBLISH_RATIO:.2f}), "
          f"peer/plain {ratio(publish_rates['peer'], publish_rates['plain']):.3f}")
    if cpu_ratio is not None:
        print(f"worker CPU: recorder/plain {cpu_ratio:.3f}x (target <= {TARGET_WORKER_CPU_RATIO:.2f}x)")
    search_cost = {
        "db_cpu_ratio": ratio(db_cpu["recorder"], db_cpu["no-search"]),
        "db_cpu_ms_per_task_added": rounded(None if None in (db_cpu["recorder"], db_cpu["no-search"]) else db_cpu["recorder"] - db_cpu["no-search"], 4),
        "execute_ratio": ratio(execute["recorder"], execute["no-search"]),
        "write_lag_s": {mode: rounded(lag[mode], 3) for mode in RECORDING},
    }
    if search_cost["db_cpu_ratio"] is not None:
        print(f"text-search indexes: the database's CPU per recorded job {search_cost['db_cpu_ratio']:.2f}x without them "
              f"({search_cost['db_cpu_ms_per_task_added']:+.3f} ms), execution {search_cost['execute_ratio']:.3f} of without")
    if bench.tasks < DEFAULT_TASKS:
        print(f"NOTE with {bench.tasks:,} tasks per run the recorder's writer threads do much of their work after the last "
              f"task, which flatters its execution ratio (not its CPU per task); use the default for a figure to quote")
    if disturbed:
        print(f"WARNING other work used more than {BUSY_WARNING:.0%} of the CPU just before {disturbed} of {len(runs)} runs; "
              f"the figures are less reliable (see 'machine_busy_max' in the JSON)")
    for failure in failures:
        print(f"FAILURE {failure}")

    return {
        "benchmark": "recording",
        "tasks": bench.tasks,
        "rounds": rounds,
        "concurrency": CONCURRENCY,
        "db_reuse_max": bench.db_reuse_max,
        "plain_per_s": rounded(execute["plain"]),
        "recorder_per_s": rounded(execute["recorder"]),
        "peer_per_s": rounded(execute["peer"]),
        "recorder_ratio": recorder_ratio,
        "peer_ratio": peer_ratio,
        "target_recorder_ratio": TARGET_RECORDER_RATIO,
        "recorder_meets_target": meets_target,
        "recorder_beats_peer": beats_peer,
        "recorder_write_lag_s": rounded(lag["recorder"], 3),
        "recorder_rows_exact": not any(run["failures"] for run in runs if run["mode"] == "recorder"),
        "recorder_runs_with_write_errors": sum(bool(run["notes"]) for run in runs if run["mode"] == "recorder"),
        "failures": failures,
        "publish": {
            "plain_per_s": rounded(publish_rates["plain"]),
            "recorder_per_s": rounded(publish_rates["recorder"]),
            "peer_per_s": rounded(publish_rates["peer"]),
            "recorder_ratio": ratio(publish_rates["recorder"], publish_rates["plain"]),
            "peer_ratio": ratio(publish_rates["peer"], publish_rates["plain"]),
        },
        "worker_cpu_ms_per_task": {mode: rounded(cpu[mode], 3) for mode in MODES},
        "worker_cpu_ratio": cpu_ratio,
        "target_publish_ratio": TARGET_PUBLISH_RATIO,
        "target_worker_cpu_ratio": TARGET_WORKER_CPU_RATIO,
        "db_cpu_ms_per_task": {mode: rounded(db_cpu[mode], 4) for mode in MODES},
        "text_search_write_cost": search_cost,
        "runs_per_s": {mode: [rounded(run["execute_per_s"]) for run in runs if run["mode"] == mode] for mode in MODES},
        "machine_busy_max": rounded(max(busy), 3) if busy else None,
        "code": code_version(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_description(bench),
    }


def describe_run(round_index, run):
    line = (f"round {round_index + 1} {run['mode']:<9} publish {run['publish_per_s']:>6,.0f}/s  "
            f"execute {run['execute_per_s']:>6,.0f}/s ({run['execute_s']:.2f} s)")
    if run["cpu_ms_per_task"] is not None:
        line += f"  worker CPU {run['cpu_ms_per_task']:.2f} ms/task"
    if run["write_lag_s"] is not None:
        line += f"  write lag {run['write_lag_s']:.2f} s"
    if run["machine_busy_before"] is not None and run["machine_busy_before"] > BUSY_WARNING:
        line += f"  (machine {run['machine_busy_before']:.0%} busy before the run)"
    return line


def stop_on_sigterm(signum, frame):
    raise KeyboardInterrupt  # so that `kill` stops the workers too, as Ctrl-C does


def main():
    arguments = parse_arguments()
    if arguments.storm_publisher:
        return storm_publisher(arguments)
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    scratch = Path(tempfile.mkdtemp(prefix="jobwatch-bench-"))
    bench = Bench(arguments, scratch)
    try:
        fingerprint = code_fingerprint()
        bench.prepare(migrate_mode="peer")  # the peer's settings have every app, so every table
        runs = []
        for round_index in range(0 if arguments.lag_only else arguments.rounds):
            for mode in rotated(MODES, round_index):
                run = run_once(bench, mode)
                if code_fingerprint() != fingerprint:
                    raise BenchmarkError("the code under monitors/, dashboard/ or demo/ changed during the run; run it again")
                runs.append(run)
                print(describe_run(round_index, run), flush=True)
                for failure in run["failures"]:
                    print(f"  FAILURE {failure}", flush=True)
                for note in run["notes"]:
                    print(f"  note: {note}", flush=True)
        storm = None
        if not arguments.no_lag:
            storm = storm_lag(bench, arguments)
            if code_fingerprint() != fingerprint:
                raise BenchmarkError("the code under monitors/, dashboard/ or demo/ changed during the run; run it again")
            print(describe_storm_run(storm), flush=True)
            for note in storm["notes"]:
                print(f"  note: {note}", flush=True)
        summary = summarise(bench, runs, arguments.rounds, storm)
    except BenchmarkError as error:
        print(f"benchmark error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; the workers it started have been stopped", file=sys.stderr)
        return 130
    finally:
        bench.close()
        shutil.rmtree(scratch, ignore_errors=True)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
