"""Flower's task list beside our jobs list, for benchmarks/dashboard.py: the queries compared
(COMPARISONS), Flower's side (flower_server, in a subprocess: its tornado app holding the jobs of
a COMPARE_ROWS-row database as Celery events, fed by feed_flower) and the comparison that runs both
and prints it (compare_with_flower; our side is dashboard.py --compare-only on that database).

Apart because it is optional (flower is a benchmark-only dependency: benchmarks/requirements.txt)
and runs in processes of its own; both are dashboard.py again, the benchmark's one entry point.
"""

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

from benchmarks.dashboard_data import connect, log
from benchmarks.dashboard_pages import percentile

# Flower's task list against ours, on the 100,000-job database: (label, our path, Flower's
# datatable query: search text, first row, rows).
COMPARISONS = [
    ("latest 50", "/jobwatch/jobs/", ("", 0, 50)),
    ("failed", "/jobwatch/jobs/?state=failed", ("state:FAILURE", 0, 50)),
    ("task+failed", "/jobwatch/jobs/?task={task}&state=failed", ("name:{task} state:FAILURE", 0, 50)),
    ("text", "/jobwatch/jobs/?text={word}", ("{word}", 0, 50)),  # Flower does not search exceptions: a full scan, no match
    ("far back", "/jobwatch/jobs/?before={middle_id}", ("", 50_000, 50)),
]

COMPARE_ROWS = 100_000
# Both sides run in subprocesses of the benchmark's one entry point (--compare-only, --flower-server).
ENTRY_POINT = str(Path(__file__).with_name("dashboard.py"))


# -- Flower ----------------------------------------------------------------------------------------


def flower_version():
    try:
        import flower
        import tornado  # noqa: F401
    except ImportError as error:
        return None, f"flower is not installed ({error}); .venv/bin/pip install -r benchmarks/requirements.txt"
    try:
        from flower.app import Flower  # noqa: F401
        from flower.events import EventsState  # noqa: F401
    except Exception as error:  # noqa: BLE001 (any import-time failure means: cannot compare)
        return None, f"flower {getattr(flower, '__version__', '?')} does not import with this Celery: {error}"
    return flower.__version__, None


def flower_server(options):
    """In a subprocess: Flower's app holding the jobs of `options.database` as Celery task events,
    its /tasks/datatable timed as requests come in (tornado's own request time, i.e. server time),
    queried by this process's main thread over loopback. Prints one line of JSON."""
    import asyncio
    import http.client
    import resource
    from urllib.parse import urlencode

    import celery
    import tornado.ioloop
    from flower.app import Flower
    from flower.options import default_options
    from flower.urls import settings

    server_times, ready = [], []
    comparisons = json.loads(options.flower_server)

    def record(handler):
        if handler.request.path.endswith("/tasks/datatable"):
            server_times.append(handler.request.request_time() * 1000)

    def serve():
        asyncio.set_event_loop(asyncio.new_event_loop())
        loop = tornado.ioloop.IOLoop.current()
        default_options.port, default_options.address = 0, "127.0.0.1"
        default_options.max_tasks = options.flower_tasks
        app = Flower(capp=celery.Celery("flower-bench", broker="memory://"), options=default_options, io_loop=loop,
                     log_function=record, **settings)
        started = time.perf_counter()
        fed = feed_flower(app.events.state, options.database, options.flower_tasks)
        ready.append((app.start_http_server(), fed, time.perf_counter() - started, loop))
        loop.start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    while not ready:
        if not thread.is_alive():
            raise SystemExit("Flower did not start")
        time.sleep(0.2)
    port, fed, feed_seconds, loop = ready[0]
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    results = {}
    for label, (search, start, length) in comparisons.items():
        query = urlencode({"draw": 1, "start": start, "length": length, "search[value]": search, "order[0][column]": 0,
                           "order[0][dir]": "desc", "columns[0][data]": "received"})
        client_times = []
        for n in range(options.warmup + options.requests):
            server_times.clear()
            before = time.perf_counter()
            connection.request("GET", "/tasks/datatable?" + query)
            response = connection.getresponse()
            body = response.read()
            elapsed = (time.perf_counter() - before) * 1000
            deadline = time.perf_counter() + 1
            while not server_times and time.perf_counter() < deadline:  # tornado logs after the last byte
                time.sleep(0.0005)
            if response.status != 200:
                results[label] = {"status": "failed", "code": response.status}
                break
            if n >= options.warmup:
                client_times.append((elapsed, server_times[-1] if server_times else elapsed))
        else:
            page = json.loads(body)
            server = [s for _, s in client_times]
            results[label] = {"status": "ok", "search": search, "start": start, "length": length,
                              "p50": round(percentile(server, 0.5), 1), "p95": round(percentile(server, 0.95), 1),
                              "client_p95": round(percentile([c for c, _ in client_times], 0.95), 1),
                              "rows": len(page["data"]), "matched": page["recordsFiltered"], "total": page["recordsTotal"]}
    loop.add_callback(loop.stop)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"tasks": fed, "feed_s": round(feed_seconds, 1), "peak_rss_mb": round(rss), "results": results}))


def feed_flower(state, name, limit):
    """The newest `limit` jobs as the events a worker would have sent Flower: received, started,
    then succeeded / failed / retried (task-sent only for jobs still waiting in the queue)."""
    def epoch(moment):
        return moment.timestamp() if moment else None

    with connect(name) as connection:
        rows = connection.execute("""
            SELECT task_id, task_name, state, args, kwargs, result, worker, worker_pid, enqueued_at, received_at,
                   started_at, finished_at, runtime, retries, exception_type, exception_message, traceback, queue,
                   root_id, parent_id, eta
            FROM (SELECT * FROM monitors_jobexecution ORDER BY id DESC LIMIT %s) newest ORDER BY id""", [limit]).fetchall()
    clock = 0
    for (task_id, name_, state_, args, kwargs, result, worker, pid, enqueued, received, started, finished, runtime,
         retries, exc_type, exc_message, traceback, queue, root_id, parent_id, eta) in rows:
        common = {"uuid": task_id, "pid": pid or 0, "utcoffset": 0}
        fields = {"name": name_, "args": repr(tuple(args or ())), "kwargs": repr(kwargs or {}), "retries": retries,
                  "eta": eta.isoformat() if eta else None, "expires": None, "root_id": root_id or task_id,
                  "parent_id": parent_id or None}
        events = []
        if received is None:
            events.append({"type": "task-sent", "hostname": "gen2101@web-1", "timestamp": epoch(enqueued), "queue": queue,
                           "exchange": "", "routing_key": queue, **fields})
        else:
            events.append({"type": "task-received", "hostname": worker, "timestamp": epoch(received), **fields})
        if started is not None:
            events.append({"type": "task-started", "hostname": worker, "timestamp": epoch(started)})
        short = exc_type.rsplit(".", 1)[-1]
        if state_ == "succeeded":
            events.append({"type": "task-succeeded", "hostname": worker, "timestamp": epoch(finished), "result": result,
                           "runtime": runtime})
        elif state_ == "failed":
            events.append({"type": "task-failed", "hostname": worker, "timestamp": epoch(finished),
                           "exception": f"{short}({exc_message!r})", "traceback": traceback})
        elif state_ in ("retried", "waiting"):
            events.append({"type": "task-retried", "hostname": worker, "timestamp": epoch(finished),
                           "exception": f"{short or 'CircuitOpenError'}({exc_message!r})", "traceback": traceback})
        for event in events:
            clock += 1
            state.event({**common, **event, "local_received": event["timestamp"], "clock": clock})
    return len(state.tasks)


def compare_with_flower(options):
    version, why = flower_version()
    if version is None:
        log(f"\nFlower: not compared: {why}")
        return None, why
    database = options.compare_database
    log(f"\nFlower {version}: our jobs list on {COMPARE_ROWS:,} rows ({database}) vs Flower holding {options.flower_tasks:,} tasks")
    ours = subprocess.run(
        [sys.executable, ENTRY_POINT, "--rows", str(COMPARE_ROWS), "--database", database, "--compare-only",
         "--requests", str(options.requests), "--warmup", str(options.warmup), "--jobs", str(options.jobs)],
        check=False, capture_output=True, text=True)
    if ours.returncode != 0:
        log(ours.stdout[-3000:] + ours.stderr[-3000:])
        return None, f"the {COMPARE_ROWS:,}-row comparison failed (exit {ours.returncode})"
    for line in ours.stdout.splitlines()[:-1]:
        log("  | " + line)
    ours = json.loads(ours.stdout.splitlines()[-1])
    values = ours["values"]
    queries = {label: (flower_query[0].format(**values), flower_query[1], flower_query[2])
               for label, _, flower_query in COMPARISONS}
    theirs = subprocess.run(
        [sys.executable, ENTRY_POINT, "--database", database, "--flower-server", json.dumps(queries),
         "--flower-tasks", str(options.flower_tasks), "--requests", str(options.requests), "--warmup", str(options.warmup)],
        check=False, capture_output=True, text=True)
    if theirs.returncode != 0:
        log(theirs.stdout[-3000:] + theirs.stderr[-3000:])
        return None, f"Flower's server failed (exit {theirs.returncode})"
    theirs = json.loads(theirs.stdout.splitlines()[-1])
    log(f"  Flower fed {theirs['tasks']:,} tasks in {theirs['feed_s']}s, peak RSS {theirs['peak_rss_mb']} MB")
    log(f"\n{'comparison':<12} {'Flower datatable query':<42} {'Flower p50':>10} {'p95':>7} {'rows/matched':>13}"
        f"  {'Jobwatch path':<44} {'p50':>7} {'p95':>7} {'api p95':>8}  Flower/Jobwatch p95")
    comparisons = {}
    for label, _path_template, _ in COMPARISONS:
        flower, mine = theirs["results"].get(label, {}), ours["pages"][label]
        search, start, length = queries[label]
        query = f"search={search!r} start={start} length={length}"
        entry = {"flower": flower, "jobwatch": {variant: mine[variant] for variant in ("full", "api")}, "path": mine["path"]}
        ratio = ratio_api = None
        if flower.get("status") == "ok" and mine["full"]["status"] == "ok":
            ratio = round(flower["p95"] / mine["full"]["p95"], 2)
        if flower.get("status") == "ok" and mine["api"]["status"] == "ok":
            ratio_api = round(flower["p95"] / mine["api"]["p95"], 2)
        entry["ratio_p95"], entry["ratio_p95_api"] = ratio, ratio_api
        comparisons[label] = entry
        flower_cells = (f"{flower['p50']:>10.1f} {flower['p95']:>7.1f} {flower['rows']:>5}/{flower['matched']:<7}"
                        if flower.get("status") == "ok" else f"{flower.get('status', 'failed'):>32}")
        mine_cells = (f"{mine['full']['p50']:>7.1f} {mine['full']['p95']:>7.1f}" if mine["full"]["status"] == "ok"
                      else f"{mine['full']['status']:>15}")
        api_cell = f"{mine['api']['p95']:>8.1f}" if mine["api"]["status"] == "ok" else f"{mine['api']['status']:>8}"
        log(f"{label:<12} {query[:42]:<42} {flower_cells}  {mine['path'][:44]:<44} {mine_cells} {api_cell}  "
            f"{ratio if ratio is not None else '-'}" + (f" (vs api {ratio_api})" if ratio_api is not None else ""))
    return {"version": version, "tasks": theirs["tasks"], "feed_s": theirs["feed_s"], "peak_rss_mb": theirs["peak_rss_mb"],
            "jobwatch_rows": ours["rows"], "jobwatch_database": database, "comparisons": comparisons}, None
