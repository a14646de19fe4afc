"""What recording costs a Celery worker: no-op task throughput, three ways, through a real Redis
broker and a real prefork worker (concurrency 2).

- plain:    Jobwatch's recorder off, no result backend;
- recorder: Jobwatch's recorder on, writing to PostgreSQL;
- peer:     recorder off, django-celery-results (result_backend "django-db", result_extended).

Each run empties the broker's Redis database and the tables, publishes N tasks from a publisher
process with the mode's settings (timed: publish throughput), then starts the worker on the full
queue and times it from the first task's start to the last task's finish (execution throughput).
Filling the queue first keeps the two figures apart: the publisher never competes with the worker
for the machine's two cores, worker start-up is not counted, and the worker runs saturated, which
is where a per-task cost shows. The moment the N-th task finishes is read exactly from a probe in
each pool process (benchmarks/apps.py), identical in every mode. For the recorder, the write lag
is how long after that moment all N rows were in JobExecution as succeeded.

Modes run in rotated order, several rounds; the figures are the medians.

    .venv/bin/python benchmarks/recording.py            # the figure the README quotes
    .venv/bin/python benchmarks/recording.py --quick    # a ~30 s smoke run

The last line printed is one line of JSON. The exit status is non-zero only when the benchmark
itself failed (a service is down, a worker died, a task went missing), never for a missed target.
"""

import argparse
import json
import shutil
import signal
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from benchmarks.harness import (  # noqa: E402
    CONCURRENCY,
    DB_REUSE_MAX,
    Bench,
    BenchmarkError,
    Worker,
    code_fingerprint,
    code_version,
    machine_busy_share,
    machine_description,
    publish,
    wait_for_tasks,
)

MODES = ("plain", "recorder", "peer")
TARGET_RECORDER_RATIO = 0.90
# About 3.5 minutes on a 2-core machine, half of it the peer (~60 tasks/s there). Fewer tasks make
# the recorder look cheaper than it is: its writer threads can finish after the last task.
DEFAULT_TASKS = 1_500
DEFAULT_ROUNDS = 3
QUICK_TASKS = 300
QUICK_ROUNDS = 1
# Longest wait for the recorder's rows after the last task (the lag is seconds, even when slow).
ROWS_TIMEOUT = 45.0
# Other work above this share of the CPU just before a run is reported with the figures.
BUSY_WARNING = 0.15
TABLES = ["monitors_jobexecution", "monitors_recorderprocess", "django_celery_results_taskresult"]


def parse_arguments():
    parser = argparse.ArgumentParser(description="No-op task throughput: plain Celery, Jobwatch's recorder, django-celery-results.")
    parser.add_argument("--tasks", type=int, default=None, help=f"tasks per run (default {DEFAULT_TASKS:,}; {QUICK_TASKS:,} with --quick)")
    parser.add_argument("--rounds", type=int, default=None, help=f"runs of each mode, in rotated order (default {DEFAULT_ROUNDS}; {QUICK_ROUNDS} with --quick)")
    parser.add_argument("--quick", action="store_true", help="a ~30 s smoke run: fewer tasks, one round")
    parser.add_argument("--reuse-db-connections", action="store_true",
                        help=f"set CELERY_DB_REUSE_MAX={DB_REUSE_MAX} in every mode, so Celery stops closing database connections "
                             "(and the connection pool) around every task: the peer's best case")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432", help="PostgreSQL server URL, without a database name")
    parser.add_argument("--database", default="jobwatch_bench", help="database to (re)create and migrate for the benchmark; dropped first if it exists (default jobwatch_bench)")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379", help="Redis server URL, without a db number")
    parser.add_argument("--redis-db", type=int, default=15, help="Redis database number for the broker; flushed before every run (default 15)")
    arguments = parser.parse_args()
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


def check_rows(bench, mode):
    """What each mode should have stored, exactly: (failures, notes), both lists of sentences."""
    n = bench.tasks
    failures, notes = [], []
    if mode == "recorder":
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
    if mode != "recorder" and bench.count("SELECT count(*) FROM monitors_jobexecution"):
        failures.append("the recorder wrote rows while switched off")
    return failures, notes


def run_once(bench, mode):
    bench.reset(TABLES)
    busy_before = machine_busy_share()
    timing = publish(bench, mode)
    probe_dir = Path(tempfile.mkdtemp(prefix=f"probe-{mode}-", dir=bench.scratch))
    worker = Worker(bench, mode, probe_dir)
    rows_at = None
    try:
        first_started, last_finished, cpu_start = wait_for_tasks(bench, worker, probe_dir, timeout=max(120.0, bench.tasks / 10))
        if mode == "recorder":
            # Measured before stopping the worker: its shutdown flushes the recorder at once.
            rows_at = wait_for_rows(bench, timeout=ROWS_TIMEOUT)
        # For the recorder this includes writing every row, whenever the writer threads did it.
        cpu_end = worker.cpu_seconds()
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
        "write_lag_s": None if rows_at is None else max(rows_at - last_finished, 0.0),
        "machine_busy_before": busy_before,
        "failures": failures,
        "notes": notes,
    }
    if mode == "recorder" and rows_at is None:
        result["failures"].insert(0, f"not all rows were succeeded in JobExecution {ROWS_TIMEOUT:.0f} s after the last task finished")
    return result


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


def summarise(bench, runs, rounds):
    execute = {mode: median_of(runs, mode, "execute_per_s") for mode in MODES}
    publish_rates = {mode: median_of(runs, mode, "publish_per_s") for mode in MODES}
    cpu = {mode: median_of(runs, mode, "cpu_ms_per_task") for mode in MODES}
    lag = median_of(runs, "recorder", "write_lag_s")
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
    print(f"{'mode':<10}{'publish/s':>11}{'vs plain':>10}{'execute/s':>11}{'vs plain':>10}{'worker CPU/task':>17}{'write lag':>11}")
    for mode in MODES:
        lag_text = f"{lag:.2f} s" if mode == "recorder" and lag is not None else "-"
        cpu_text = "-" if cpu[mode] is None else f"{cpu[mode]:.2f} ms"
        print(
            f"{mode:<10}{publish_rates[mode]:>11,.0f}{ratio(publish_rates[mode], publish_rates['plain']):>10.3f}"
            f"{execute[mode]:>11,.0f}{ratio(execute[mode], execute['plain']):>10.3f}{cpu_text:>17}{lag_text:>11}"
        )
    print(f"execution: recorder/plain {recorder_ratio:.3f} (target >= {TARGET_RECORDER_RATIO:.2f}: "
          f"{'met' if meets_target else 'MISSED'}), peer/plain {peer_ratio:.3f}; "
          f"the recorder {'beats' if beats_peer else 'DOES NOT beat'} the peer")
    print(f"publish:   recorder/plain {ratio(publish_rates['recorder'], publish_rates['plain']):.3f}, "
          f"peer/plain {ratio(publish_rates['peer'], publish_rates['plain']):.3f}")
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
        "recorder_write_lag_s": rounded(lag, 3),
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
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    scratch = Path(tempfile.mkdtemp(prefix="jobwatch-bench-"))
    bench = Bench(arguments, scratch)
    try:
        fingerprint = code_fingerprint()
        bench.prepare(migrate_mode="peer")  # the peer's settings have every app, so every table
        runs = []
        for round_index in range(arguments.rounds):
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
        summary = summarise(bench, runs, arguments.rounds)
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
