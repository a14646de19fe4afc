"""Ingest: how many job events a second the recorder's writer puts into PostgreSQL.

    .venv/bin/python benchmarks/ingest.py            # ~3-5 min: 20,000 events a run, 2 rounds
    .venv/bin/python benchmarks/ingest.py --quick    # ~1 min: 8,000 events a run, 1 round
    .venv/bin/python benchmarks/ingest.py --profile  # then cProfile of one upsert writer: where its time goes

Drops, creates and migrates the database jobwatch_bench_ingest (--database). No broker, no worker:
the events are made up here, as the recorder's signal handlers make them (monitors/recording/
signals.py, events.py) — a job's enqueue (with its origin, references and the "sent" count), its
commit when enqueued in a transaction, its start and finish (with the counts and times the side
tables take); some jobs fail with a traceback, some fail, are retried and then succeed or fail
again. Every event of a job carries the job's enqueued_at, as the recorder's do.

The events of all jobs are put in the order they happened, then shuffled within a window (2,000
events, --window: the events of one job arrive in several batches, from several processes, in
any order) and cut into batches of RECORDER_BATCH_SIZE (--batch).

Each batch goes through the real writer: `EventWriter._write(batch)`, what the writer thread's
flush does — fold_events, the job rows in one transaction, then the failed jobs' payloads, the
Prometheus counters, the per-minute tallies, the time histograms and the writer's own row, each in
a transaction of its own. Called directly rather than through submit() and the thread, so that
the writer never waits for its flush interval: it is kept busy, and what is measured is how fast
it can go. Everything else is the production code.

Two ways of writing the job rows, in the same run: `upsert` (upsert.write_rows, the recorder's
own) and `copy` (staging.write_rows_by_copy: COPY into a temporary table, then INSERT … SELECT …
ON CONFLICT with the same merge). For each, 1, 2 and 4 writer processes (--writers), each with
its own connection and its own jobs, all started at once; events/s overall (all events over the
time until the last writer finished) and per writer. Tables are emptied and checkpointed before
each run, and the rows checked after it: one per job, in its final state. A third mode, `no-search`,
is `upsert` into a jobs table without the trigram indexes that make text search exact (migration
0017, dropped for the run and put back after): the two side by side give what those indexes cost
each write, in events/s and in the writers' backends' CPU.

The database's CPU: utime + stime of every PostgreSQL server process (/proc), before and after a
run, as CPU-seconds per 1,000 events and as cores busy over the run. All of the server's
processes count (WAL writer, checkpointer, backends that exited meanwhile), and so does anything
else using the same server at the time: the run also gives the CPU of its own writers' backends
alone.

The last line is one line of JSON. The exit status is non-zero only when the benchmark could not
measure (the database unusable, a writer failing, rows missing), never for a missed target.
"""

import argparse
import cProfile
import io
import json
import multiprocessing
import os
import platform
import pstats
import random
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from benchmarks.databases import recreate_database  # noqa: E402
from benchmarks.harness import TEXT_SEARCH_INDEXES, code_fingerprint, cpu_used, machine_busy_share, postgres_cpu, process_cpu_seconds  # noqa: E402

TARGET_ONE_WRITER = 20_000  # events a second, one writer, the recorder's own upsert
# "no-search" is the recorder's upsert into a jobs table without its trigram indexes (migration
# 0017): against "upsert" it gives what exact text search costs each write.
MODES = ("upsert", "copy", "no-search")
# A run takes 5–20 s at the rates seen on the 2-core machine (1,000–4,500 events/s): the default
# run is ~3 min on it alone, ~5 min with other work present.
DEFAULT_EVENTS = 20_000
DEFAULT_ROUNDS = 2
QUICK_EVENTS = 8_000
QUICK_ROUNDS = 1
DEFAULT_WINDOW = 2_000
WARMUP_JOBS = 50
# Other work above this share of the CPU just before a run is reported with the figures.
BUSY_WARNING = 0.15
TABLES = ["monitors_jobexecution", "monitors_jobpayload", "monitors_taskcounter", "monitors_jobtally",
          "monitors_origintally", "monitors_jobhistogram", "monitors_recorderprocess"]

# The shop the events come from: (task, queue, share of jobs).
TASKS = [
    ("shop.tasks.send_order_confirmation", "emails", 0.22),
    ("shop.tasks.charge_payment", "payments", 0.15),
    ("shop.tasks.reserve_inventory", "orders", 0.15),
    ("crm.tasks.refresh_customer_segments", "crm", 0.14),
    ("crm.tasks.sync_to_mailing_list", "crm", 0.10),
    ("search.tasks.reindex_product", "search", 0.08),
    ("shop.tasks.ship_order", "orders", 0.05),
    ("analytics.tasks.track_visit", "analytics", 0.05),
    ("reports.tasks.daily_sales", "reports", 0.02),
    ("media.tasks.make_thumbnails", "media", 0.02),
    ("shop.tasks.expire_carts", "default", 0.01),
    ("accounts.tasks.send_password_reset", "emails", 0.01),
]
FAILED_FOR_GOOD = 0.04  # fail on their first attempt and are not retried
RETRIED = 0.06          # fail once, are retried; a quarter of those fail again
IN_TRANSACTION = 0.30   # enqueued inside a transaction: one more event when it commits
ERRORS = [
    ("requests.exceptions.ConnectionError", "ConnectionError", "HTTPSConnectionPool(host='api.partner.example', port=443): "
     "Max retries exceeded with url: /v2/orders (Caused by NewConnectionError('Failed to establish a new connection'))",
     "api.partner.example:443", None, "connection"),
    ("shop.gateway.GatewayError", "GatewayError", "502 Bad Gateway: upstream timed out", "pay.example:443", 502, "http"),
    ("shop.models.Order.DoesNotExist", "DoesNotExist", "Order matching query does not exist.", "", None, ""),
    ("KeyError", "KeyError", "'customer_id'", "", None, ""),
]


def traceback_text(exception_type, message, rng):
    """A Python traceback of a plausible depth (1.5–4 kB, as a Django task's are)."""
    frames = [("/srv/app/.venv/lib/python3.12/site-packages/celery/app/trace.py", 453, "trace_task", "R = retval = fun(*args, **kwargs)"),
              ("/srv/app/.venv/lib/python3.12/site-packages/celery/app/trace.py", 736, "__protected_call__", "return self.run(*args, **kwargs)"),
              ("/srv/app/shop/tasks.py", rng.randint(20, 400), "run", "result = client.post(url, json=payload, timeout=10)")]
    frames += [(f"/srv/app/.venv/lib/python3.12/site-packages/requests/{name}.py", rng.randint(50, 700), function, line)
               for name, function, line in [("api", "post", "return request(\"post\", url, data=data, json=json, **kwargs)"),
                                            ("sessions", "request", "resp = self.send(prep, **send_kwargs)"),
                                            ("sessions", "send", "r = adapter.send(request, **kwargs)"),
                                            ("adapters", "send", "raise ConnectionError(e, request=request)")][: rng.randint(1, 4)]]
    lines = ["Traceback (most recent call last):"]
    for path, number, function, line in frames:
        lines += [f'  File "{path}", line {number}, in {function}', f"    {line}"]
    lines.append(f"{exception_type}: {message}")
    return "\n".join(lines) + "\n"


def job_events(task_id, rng, enqueued_at, number, host):
    """Every event of one job, each with the time it happens. `host` names the publisher and the
    worker: a writer is one process, and a process's counts carry its own host name."""
    name, queue = rng.choices([(task, queue) for task, queue, _ in TASKS], weights=[share for *_, share in TASKS])[0]
    publisher, worker = f"web-{host}", f"celery@worker-{host}"
    args, kwargs = [number], {"customer_id": number % 9973, "notify": True}
    payload = {"args": args, "kwargs": kwargs, "payload_size": 42 + len(str(number)), "payload_complete": True,
               "payload_hash": f"{rng.getrandbits(64):016x}"}
    enqueue = {
        "task_id": task_id, "task_name": name, "state": "enqueued", "progress": 0, "retries": 0, "circuit_waits": 0,
        "queue": queue, "exchange": "", "routing_key": queue, "priority": None, "eta": None, "expires": None,
        "parent_id": "", "root_id": "", "group_id": "", "replay_of": "", "enqueued_at": enqueued_at,
        "updated_at": enqueued_at, **payload,
        "origin_kind": "save", "origin_model": "shop.Order", "origin_pk": str(number), "origin_save": f"{rng.getrandbits(64):016x}",
        "origin_created": number % 3 == 0, "origin_update_fields": None if number % 3 == 0 else ["status", "updated_at"],
        "origin_receiver": "shop.receivers.order_saved", "origin_request": "POST /checkout/",
        "origin_request_id": f"{rng.getrandbits(64):016x}",
        "references": [{"arg": "0", "model": "shop.Order", "pk": number}],
        "_counts": [("sent", name, publisher, queue, "", None)],
    }
    happened = [(enqueued_at, enqueue)]
    in_transaction = rng.random() < IN_TRANSACTION
    enqueue["origin_in_atomic"] = in_transaction
    if in_transaction:
        enqueue["origin_transaction"] = f"{rng.getrandbits(64):016x}"
        committed = enqueued_at + timedelta(milliseconds=rng.uniform(1, 30))
        happened.append((committed, {"task_id": task_id, "task_name": name, "state": "enqueued", "progress": 0,
                                     "origin_committed_at": committed, "updated_at": committed, "enqueued_at": enqueued_at}))
    draw = rng.random()
    attempts = 2 if draw < RETRIED else 1
    outcome = "failed" if draw < RETRIED / 4 or RETRIED <= draw < RETRIED + FAILED_FOR_GOOD else "succeeded"
    moment = enqueued_at
    for attempt in range(attempts):
        pid = 1000 + number % 2  # the worker's two pool processes
        wait = rng.expovariate(1 / 0.05)
        received = moment + timedelta(seconds=wait * 0.9)
        started = moment + timedelta(seconds=wait)
        runtime = rng.lognormvariate(-3, 1.2)
        finished = started + timedelta(seconds=runtime)
        progress = attempt * 4
        happened.append((started, {
            "task_id": task_id, "task_name": name, "state": "started", "progress": progress + 2, "retries": attempt,
            "queue": queue, "started_at": started, "received_at": received, "worker": worker, "worker_pid": pid,
            "parent_id": "", "root_id": "", "group_id": "", "updated_at": started, "enqueued_at": enqueued_at, **payload,
            "_counts": [("started", name, worker, queue, "", wait)]}))
        final = outcome if attempt == attempts - 1 else "retried"
        finish = {"task_id": task_id, "task_name": name, "state": final, "progress": progress + 3, "retries": attempt,
                  "circuit": "", "finished_at": finished, "worker": worker, "worker_pid": pid, "updated_at": finished,
                  "runtime": runtime, "enqueued_at": enqueued_at}
        if final == "succeeded":
            finish["result"] = "None" if number % 2 else f"{{'order': {number}, 'status': 'ok'}}"
        else:
            exception_type, short, message, target, status, kind = rng.choice(ERRORS)
            finish.update(exception_type=exception_type, exception_message=message,
                          traceback=traceback_text(exception_type, message, rng), error_target=target,
                          error_status=status, error_kind=kind, error_progress=progress + 3)
        metric = {"succeeded": "succeeded", "failed": "failed", "retried": "retried"}[final]
        finish["_counts"] = [(metric, name, worker, queue, short if final == "failed" else "",
                              runtime if final != "retried" else None)]
        happened.append((finished, finish))
        if final == "retried":
            # The retry republishes the job's message before its attempt's finish is recorded.
            eta = finished + timedelta(seconds=rng.uniform(1, 5))
            happened.append((finished - timedelta(microseconds=1), {
                "task_id": task_id, "task_name": name, "state": "retried", "progress": progress + 3,
                "retries": attempt + 1, "eta": eta, "queue": queue, "enqueued_at": enqueued_at, "updated_at": finished}))
            moment = eta
    return happened, outcome


def event_batches(prefix, event_count, batch, window, seed, host=1, jobs_per_second=2_000.0):
    """About `event_count` events of jobs whose task ids start with `prefix`: in the order they
    happened, shuffled within `window`, in batches of `batch`. Also the final state of each job."""
    rng = random.Random(seed)
    start = datetime.now(UTC) - timedelta(seconds=event_count / jobs_per_second)
    happened, outcomes, number = [], {}, 0
    while len(happened) < event_count:
        enqueued_at = start + timedelta(seconds=number / jobs_per_second)
        task_id = prefix + str(uuid.UUID(int=rng.getrandbits(128), version=4))
        events, outcomes[task_id] = job_events(task_id, rng, enqueued_at, number, host)
        happened += events
        number += 1
    happened.sort(key=lambda pair: pair[0])
    arrived = [event for _, event in happened]
    for begin in range(0, len(arrived), window):
        part = arrived[begin : begin + window]
        rng.shuffle(part)
        arrived[begin : begin + window] = part
    return [arrived[begin : begin + batch] for begin in range(0, len(arrived), batch)], outcomes


# -- one writer process ---------------------------------------------------------------------------


def setup_django():
    import django

    django.setup()


class Timed:
    """A wrapper that adds up the time spent in a function of upsert.py. The writer looks
    fold_events and write_rows up in that module at every batch, so that replacing them there is
    what it calls; `calls` says whether it did."""

    def __init__(self, function):
        self.function, self.seconds, self.calls = function, 0.0, 0

    def __call__(self, *args, **kwargs):
        started = time.perf_counter()
        try:
            return self.function(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - started
            self.calls += 1


def instrumented_writer(mode, batch):
    from monitors.recording import staging, upsert
    from monitors.recording.writer import EventWriter

    fold = upsert.fold_events = Timed(upsert.fold_events)
    write = upsert.write_rows = Timed(staging.write_rows_by_copy if mode == "copy" else upsert.write_rows)
    # The buffer and interval are those of the settings; neither is used, the thread never starts.
    writer = EventWriter(buffer_size=10_000, batch_size=batch, flush_interval=0.5, using="default")
    return writer, fold, write


def write_stream(writer, batches, fold, write):
    """The batches through the writer's flush; the seconds each part took."""
    before = (fold.seconds, write.seconds, fold.calls)
    cpu_started, started = time.process_time(), time.perf_counter()
    for events in batches:
        writer._write(events)
    seconds = time.perf_counter() - started
    if fold.calls - before[2] != len(batches) or not write.calls:
        raise RuntimeError("the writer did not call upsert.fold_events and write_rows as timed here: it no longer "
                           "looks them up in upsert.py at write time, and benchmarks/ingest.py must hook them another way")
    fold_seconds, write_seconds = fold.seconds - before[0], write.seconds - before[1]
    return {"seconds": seconds, "fold_s": fold_seconds, "job_rows_s": write_seconds,
            "side_data_s": seconds - fold_seconds - write_seconds, "writer_cpu_s": time.process_time() - cpu_started}


def writer_process(index, mode, run_name, event_count, batch, window, seed, ready, start, results, finish):
    try:
        setup_django()
        batches, outcomes = event_batches(f"{run_name}-{index}-", event_count, batch, window, seed, host=index + 1)
        warmup, warmup_outcomes = event_batches(f"{run_name}-{index}-warm-", WARMUP_JOBS * 3, batch, window, seed + 1,
                                                host=index + 1)
        writer, fold, write = instrumented_writer(mode, batch)
        # Connect, prepare the statements, make the staging table: not part of the figures.
        write_stream(writer, warmup, fold, write)
        with writer._connection().cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            backend = cursor.fetchone()[0]
        rows_written, fold_rows = [], fold.function

        def fold_counting(events):  # how many rows the batches folded into: jobs + merges
            rows = fold_rows(events)
            rows_written.append(len(rows))
            return rows

        fold.function = fold_counting
        ready.put((index, backend, None))
    except BaseException as error:
        ready.put((index, None, f"{type(error).__name__}: {error}"))
        return
    start.wait()
    try:
        figures = write_stream(writer, batches, fold, write)
        events = sum(len(events) for events in batches)
        figures.update(index=index, events=events, batches=len(batches), jobs=len(outcomes),
                       rows_written=sum(rows_written), outcomes=count_outcomes(outcomes, warmup_outcomes),
                       recorded=writer.counters.recorded, write_errors=writer.counters.write_errors,
                       last_error=writer.counters.last_error)
        results.put(figures)
    except BaseException as error:
        results.put({"index": index, "error": f"{type(error).__name__}: {error}"})
    # Stay connected until the parent has read the server's CPU: a backend that exits takes its
    # CPU time with it.
    finish.wait(600)
    writer.release_connection()


def count_outcomes(*maps):
    counts = {}
    for outcomes in maps:
        for outcome in outcomes.values():
            counts[outcome] = counts.get(outcome, 0) + 1
    return counts


# -- the runs -------------------------------------------------------------------------------------


class BenchmarkError(Exception):
    """The benchmark could not measure."""


def reset(database_url, mode="upsert"):
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as db:
        db.execute(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY")
        if not TEXT_SEARCH_INDEXES.keep(db, keep=mode != "no-search") and mode != "no-search":
            raise BenchmarkError("the jobs table has no text-search indexes (is pg_trgm missing?): nothing to compare")
        db.execute("CHECKPOINT")  # what the previous run dirtied is not written during this one


def check_rows(database_url, expected):
    """The failures (sentences) of a run's rows: one per job, in its final state."""
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as db:
        stored = dict(db.execute("SELECT state, count(*) FROM monitors_jobexecution GROUP BY state").fetchall())
        duplicated = db.execute("SELECT count(*) FROM (SELECT task_id FROM monitors_jobexecution GROUP BY task_id"
                                " HAVING count(*) > 1) AS repeated").fetchone()[0]
    failures = []
    if stored != expected:
        failures.append(f"rows by state {stored}, expected {expected}")
    if duplicated:
        failures.append(f"{duplicated} task ids have more than one row")
    return failures


def run(mode, writers, arguments, database_url, round_index):
    reset(database_url, mode)
    busy = machine_busy_share()
    context = multiprocessing.get_context("spawn")
    ready, results, start, finish = context.Queue(), context.Queue(), context.Event(), context.Event()
    per_writer = arguments.events // writers
    run_name = f"r{round_index}{MODES.index(mode)}{writers}"
    processes = [context.Process(target=writer_process, args=(index, mode, run_name, per_writer, arguments.batch,
                                                              arguments.window, 1000 * round_index + index, ready, start,
                                                              results, finish))
                 for index in range(writers)]
    for process in processes:
        process.start()
    try:
        backends = []
        for _ in processes:
            index, backend, error = ready.get(timeout=300)
            if error:
                raise BenchmarkError(f"writer {index} could not start: {error}")
            backends.append(backend)
        server_before, backends_before = postgres_cpu(), sum(process_cpu_seconds(pid) for pid in backends)
        started = time.perf_counter()
        start.set()
        figures = [results.get(timeout=1800) for _ in processes]
        elapsed = time.perf_counter() - started
        server_after, backends_after = postgres_cpu(), sum(process_cpu_seconds(pid) for pid in backends)
    finally:
        finish.set()
        for process in processes:
            process.join(timeout=60)
            if process.is_alive():
                process.kill()
    errors = [f"writer {figure['index']}: {figure['error']}" for figure in figures if "error" in figure]
    if errors:
        raise BenchmarkError("; ".join(errors))
    expected = {}
    for figure in figures:
        for state, count in figure["outcomes"].items():
            expected[state] = expected.get(state, 0) + count
    failures = check_rows(database_url, expected)
    failures += [f"writer {figure['index']}: {figure['write_errors']} write errors, the last: {figure['last_error']}"
                 for figure in figures if figure["write_errors"]]
    if failures:
        raise BenchmarkError(f"{mode}, {writers} writer(s): " + "; ".join(failures))
    events = sum(figure["events"] for figure in figures)
    server_cpu, backends_cpu = cpu_used(server_before, server_after), backends_after - backends_before

    def per_thousand(seconds):
        return round(seconds / events * 1000, 4)

    return {
        "mode": mode, "writers": writers, "round": round_index, "events": events, "seconds": round(elapsed, 3),
        "events_per_s": round(events / elapsed), "machine_busy_before": None if busy is None else round(busy, 3),
        "per_writer_events_per_s": [round(figure["events"] / figure["seconds"]) for figure in figures],
        "jobs": sum(figure["jobs"] for figure in figures),
        "merged_share": round(1 - sum(figure["jobs"] for figure in figures) / sum(figure["rows_written"] for figure in figures), 3),
        "db_cpu_s_per_1000": per_thousand(server_cpu), "db_cores_busy": round(server_cpu / elapsed, 2),
        "backends_cpu_s_per_1000": per_thousand(backends_cpu),
        "writer_cpu_s_per_1000": per_thousand(sum(figure["writer_cpu_s"] for figure in figures)),
        # Wall time of the writers' three parts, summed over writers, per 1,000 events.
        "fold_s_per_1000": per_thousand(sum(figure["fold_s"] for figure in figures)),
        "job_rows_s_per_1000": per_thousand(sum(figure["job_rows_s"] for figure in figures)),
        "side_data_s_per_1000": per_thousand(sum(figure["side_data_s"] for figure in figures)),
    }


def describe(result):
    per_writer = ", ".join(f"{rate:,}" for rate in result["per_writer_events_per_s"])
    busy = result["machine_busy_before"]
    return (f"  {result['mode']:<10}{result['writers']} writer(s): {result['events_per_s']:>7,} events/s "
            f"(each: {per_writer}); db CPU {result['db_cpu_s_per_1000']:.3f} s/1k events "
            f"(own backends {result['backends_cpu_s_per_1000']:.3f}), {result['db_cores_busy']:.2f} cores; "
            f"writers' CPU {result['writer_cpu_s_per_1000']:.3f} s/1k"
            + (f"  [machine {busy:.0%} busy before]" if busy is not None and busy > BUSY_WARNING else ""))


# -- where one writer's time goes -----------------------------------------------------------------


def profile_one_writer(arguments, database_url):
    """cProfile of one upsert writer in this process, over --events events."""
    reset(database_url)
    batches, _ = event_batches("profile-", arguments.events, arguments.batch, arguments.window, seed=7)
    warmup, _ = event_batches("profile-warm-", WARMUP_JOBS * 3, arguments.batch, arguments.window, seed=8)
    writer, fold, write = instrumented_writer("upsert", arguments.batch)
    write_stream(writer, warmup, fold, write)
    profiler = cProfile.Profile()
    profiler.enable()
    figures = write_stream(writer, batches, fold, write)
    profiler.disable()
    writer.release_connection()
    events = sum(len(events) for events in batches)
    stats = pstats.Stats(profiler, stream=io.StringIO())
    own, cumulative = {}, {}
    for (path, _line, function), (_calls, _primitive, own_seconds, cumulative_seconds, _callers) in stats.stats.items():
        key = f"{Path(path).name}:{function}" if path != "~" else function
        own[key] = own.get(key, 0.0) + own_seconds
        cumulative[key] = max(cumulative.get(key, 0.0), cumulative_seconds)
    total = figures["seconds"]
    print(f"\nprofile: one upsert writer, {events:,} events in {total:.2f} s under cProfile "
          f"({events / total:,.0f} events/s; the profiler slows the Python part more than the waits)")
    steps = ["upsert.py:fold_events", "upsert.py:write_rows", "writer.py:_write_side_data", "upsert.py:counter_increments",
             "upsert.py:tally_increments", "upsert.py:histogram_increments", "upsert.py:write_task_counters",
             "upsert.py:write_tallies", "upsert.py:write_histograms", "upsert.py:write_payloads",
             "writer.py:_write_counters", "base.py:commit"]
    print("  the writer's steps (cumulative s, share of the run):")
    for key in steps:
        if key in cumulative:
            print(f"    {key:<40}{cumulative[key]:>7.2f} s {cumulative[key] / total:>6.1%}")
    top = sorted(own.items(), key=lambda item: -item[1])[:15]
    print("  top own time (function, s, share of the run):")
    for key, seconds in top:
        print(f"    {key[:70]:<72}{seconds:>7.2f} s {seconds / total:>6.1%}")
    return {"events": events, "seconds": round(total, 3), "fold_s": round(figures["fold_s"], 3),
            "job_rows_s": round(figures["job_rows_s"], 3), "side_data_s": round(figures["side_data_s"], 3),
            "steps_cumulative_s": {key: round(cumulative[key], 3) for key in steps if key in cumulative},
            "top_own_s": {key: round(seconds, 3) for key, seconds in top}}


# -- the benchmark --------------------------------------------------------------------------------


def parse_arguments():
    from monitors.conf import DEFAULTS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"~1 min: {QUICK_EVENTS:,} events a run, {QUICK_ROUNDS} round")
    parser.add_argument("--events", type=int, default=None,
                        help=f"events a run, shared by its writers (default {DEFAULT_EVENTS:,}; {QUICK_EVENTS:,} with --quick)")
    parser.add_argument("--rounds", type=int, default=None, help=f"runs of each mode and writer count (default {DEFAULT_ROUNDS}); the fastest is reported")
    parser.add_argument("--batch", type=int, default=DEFAULTS["RECORDER_BATCH_SIZE"],
                        help=f"events a batch (default RECORDER_BATCH_SIZE, {DEFAULTS['RECORDER_BATCH_SIZE']})")
    parser.add_argument("--window", type=int, default=DEFAULT_WINDOW, help=f"events shuffled together (default {DEFAULT_WINDOW:,})")
    parser.add_argument("--writers", default="1,2,4", help="writer process counts (default 1,2,4)")
    parser.add_argument("--modes", default=",".join(MODES), help=f"of {', '.join(MODES)} (default all)")
    parser.add_argument("--database", default="jobwatch_bench_ingest", help="database to drop, create and migrate (default jobwatch_bench_ingest)")
    parser.add_argument("--profile", action="store_true", help="after the runs, cProfile one upsert writer over --events events")
    arguments = parser.parse_args()
    arguments.events = arguments.events or (QUICK_EVENTS if arguments.quick else DEFAULT_EVENTS)
    arguments.rounds = arguments.rounds or (QUICK_ROUNDS if arguments.quick else DEFAULT_ROUNDS)
    arguments.writers = [int(count) for count in arguments.writers.split(",")]
    arguments.modes = [mode for mode in arguments.modes.split(",") if mode]
    if set(arguments.modes) - set(MODES) or not arguments.modes:
        parser.error(f"--modes: {', '.join(MODES)}")
    if arguments.events < 1000 or arguments.batch < 1 or arguments.window < 1 or min(arguments.writers) < 1:
        parser.error("--events at least 1000; --batch, --window and --writers at least 1")
    return arguments


def machine(database_url):
    import psycopg

    cpu = platform.machine()
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    with psycopg.connect(database_url) as db:
        version = db.execute("SHOW server_version").fetchone()[0].split()[0]
        settings = dict(db.execute("SELECT name, setting FROM pg_settings WHERE name IN"
                                   " ('synchronous_commit', 'shared_buffers', 'autovacuum')").fetchall())
    return (f"{os.cpu_count()} x {cpu}, {platform.system()} {platform.release()}, Python {platform.python_version()}, "
            f"PostgreSQL {version} (synchronous_commit {settings.get('synchronous_commit')}, "
            f"shared_buffers {int(settings.get('shared_buffers', 0)) * 8 // 1024} MB, autovacuum {settings.get('autovacuum')})")


def commit():
    try:  # rev-parse only reads; the measured files' hash says whether they differ from it
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def main():
    arguments = parse_arguments()
    database_url = f"postgresql://postgres@127.0.0.1:5432/{arguments.database}"
    os.environ["DATABASE_URL"] = database_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")
    os.environ["DEBUG"] = "0"  # as in production: with DEBUG on, Django keeps every query in memory
    os.environ.setdefault("SECRET_KEY", "benchmark-only")
    os.environ["JOBWATCH_RECORDER_ENABLED"] = "0"  # the benchmark's own processes record nothing
    try:
        recreate_database(arguments.database)
        setup_django()
        from django.core.management import call_command
        from django.db import connection

        call_command("migrate", verbosity=0)
        from monitors.recording import upsert

        conflict_columns = getattr(upsert, "conflict_columns", None)
        conflict = conflict_columns(connection) if conflict_columns else ["task_id"]
        connection.close()
        fingerprint = code_fingerprint()
        print(f"{arguments.events:,} events a run in batches of {arguments.batch}, shuffled within {arguments.window:,}; "
              f"writers {arguments.writers}; job rows unique by {', '.join(conflict)}", flush=True)
        results = []
        for round_index in range(arguments.rounds):
            for position, writers in enumerate(arguments.writers):
                # Alternate which mode goes first, so that drift on the machine hits both alike.
                order = arguments.modes if (position + round_index) % 2 == 0 else arguments.modes[::-1]
                for mode in order:
                    result = run(mode, writers, arguments, database_url, round_index)
                    results.append(result)
                    print(describe(result), flush=True)
        profile = profile_one_writer(arguments, database_url) if arguments.profile else None
        if code_fingerprint() != fingerprint:
            print("WARNING the measured code changed during the run (someone else is editing it): rerun to be sure", flush=True)
        description = machine(database_url)
    except BenchmarkError as error:
        print(f"benchmark error: {error}", file=sys.stderr)
        sys.exit(1)
    except Exception as error:  # psycopg's and Django's: the database could not be used
        if type(error).__module__.split(".")[0] not in ("psycopg", "django"):
            raise
        print(f"benchmark error: {error}", file=sys.stderr)
        sys.exit(1)

    # The fastest round of each mode and writer count: other work on the machine only slows a run.
    best = {}
    for result in results:
        key = (result["mode"], result["writers"])
        if key not in best or result["events_per_s"] > best[key]["events_per_s"]:
            best[key] = result

    def table(field):
        return {mode: {str(writers): best[(mode, writers)][field] for writers in arguments.writers if (mode, writers) in best}
                for mode in arguments.modes}

    ratios = {str(writers): round(best[("copy", writers)]["events_per_s"] / best[("upsert", writers)]["events_per_s"], 3)
              for writers in arguments.writers if ("copy", writers) in best and ("upsert", writers) in best}
    print()
    print(f"{'mode':<10}{'writers':>8}{'events/s':>10}{'per writer':>12}{'db CPU s/1k':>13}{'own backends':>14}"
          f"{'db cores':>10}{'fold':>8}{'job rows':>10}{'side data':>11}")
    for (mode, writers), result in sorted(best.items()):
        print(f"{mode:<10}{writers:>8}{result['events_per_s']:>10,}{round(result['events_per_s'] / writers):>12,}"
              f"{result['db_cpu_s_per_1000']:>13.3f}{result['backends_cpu_s_per_1000']:>14.3f}{result['db_cores_busy']:>10.2f}"
              f"{result['fold_s_per_1000']:>8.3f}{result['job_rows_s_per_1000']:>10.3f}{result['side_data_s_per_1000']:>11.3f}")
    print("(fold, job rows, side data: the writers' wall seconds per 1,000 events in fold_events, in writing the job "
          "rows, and in the rest of the flush: payloads, counters, tallies, histograms, the writer's row)")
    for writers, ratio in ratios.items():
        print(f"copy / upsert, {writers} writer(s): {ratio:.3f}")
    search_cost = {str(writers): {
        "events_per_s_ratio": round(best[("upsert", writers)]["events_per_s"] / best[("no-search", writers)]["events_per_s"], 3),
        "own_backends_cpu_ratio": round(best[("upsert", writers)]["backends_cpu_s_per_1000"]
                                        / best[("no-search", writers)]["backends_cpu_s_per_1000"], 3),
        "own_backends_cpu_s_per_1000_added": round(best[("upsert", writers)]["backends_cpu_s_per_1000"]
                                                   - best[("no-search", writers)]["backends_cpu_s_per_1000"], 4),
    } for writers in arguments.writers if ("upsert", writers) in best and ("no-search", writers) in best}
    for writers, cost in search_cost.items():
        print(f"text-search indexes, {writers} writer(s): events/s {cost['events_per_s_ratio']:.3f} of without them; "
              f"the writers' backends' CPU {cost['own_backends_cpu_ratio']:.2f}x "
              f"({cost['own_backends_cpu_s_per_1000_added']:+.3f} s per 1,000 events)")
    one = best.get(("upsert", 1))
    met = None if one is None else one["events_per_s"] >= TARGET_ONE_WRITER
    if one is not None:
        print(f"one writer, the recorder's upsert: {one['events_per_s']:,} events/s "
              f"(target {TARGET_ONE_WRITER:,}: {'met' if met else 'missed'})")
    busy = [result["machine_busy_before"] for result in results if result["machine_busy_before"] is not None]
    if busy and max(busy) > BUSY_WARNING:
        print(f"WARNING other work used up to {max(busy):.0%} of the CPU just before a run: the figures are below what the machine can do alone")
    copy_one = best.get(("copy", 1))
    print(json.dumps({
        "benchmark": "ingest", "date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": description,
        "commit": commit(), "code_fingerprint": fingerprint[:16], "events_per_run": arguments.events, "batch": arguments.batch,
        "window": arguments.window, "rounds": arguments.rounds, "job_rows_unique_by": conflict,
        "events_per_second": table("events_per_s"),
        "per_writer_events_per_second": {mode: {writers: round(rate / int(writers)) for writers, rate in rates.items()}
                                         for mode, rates in table("events_per_s").items()},
        "copy_over_upsert": ratios, "text_search_write_cost": search_cost,
        "db_cpu_seconds_per_1000_events": table("db_cpu_s_per_1000"), "db_cores_busy": table("db_cores_busy"),
        "db_own_backends_cpu_seconds_per_1000_events": table("backends_cpu_s_per_1000"),
        "writer_cpu_seconds_per_1000_events": table("writer_cpu_s_per_1000"),
        "writer_seconds_per_1000_events": {part: table(f"{part}_s_per_1000") for part in ("fold", "job_rows", "side_data")},
        "merged_share": table("merged_share"), "machine_busy_max": max(busy) if busy else None,
        "load_average": [round(value, 2) for value in os.getloadavg()], "profile": profile, "runs": results,
        "targets": {"one_writer_events_per_second": TARGET_ONE_WRITER},
        "met": {"one_writer_events_per_second": met},
        "met_with_copy": None if copy_one is None else copy_one["events_per_s"] >= TARGET_ONE_WRITER,
    }))


if __name__ == "__main__":
    main()
