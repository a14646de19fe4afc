"""The dashboard's server time, page by page, on 10,000,000 recorded jobs; and Flower's task list
beside ours on 100,000.

    .venv/bin/python benchmarks/dashboard.py                  # builds the data on the first run
    .venv/bin/python benchmarks/dashboard.py --rows 200000    # a quick look, in its own database
    .venv/bin/python benchmarks/dashboard.py --rebuild        # generate the data again
    .venv/bin/python benchmarks/dashboard.py --pages jobs --requests 10 --no-flower

Data: a PostgreSQL database (jobwatch_bench_dashboard; other sizes get their own, e.g.
jobwatch_bench_dashboard_200k) migrated with this project's migrations and filled by set-based
SQL: `--rows` jobs over the last 30 days (20 tasks, 5 queues, ~2 % failed with 6 kinds of error,
origins, workers, a crm backlog, an open payment circuit, jobs stuck on a vanished worker), a year
of queue samples (raw 15-s samples for 2 days, 10-minute roll-ups before, as roll_up_samples
leaves them), per-minute JobTally rows counted from the jobs, findings, incidents, circuits,
recorder processes, audit log and archived messages. The database is reused while its marker
(table bench_dataset) matches; a reused database is migrated (new indexes included) and topped
up to the present (new jobs since it was built, the oldest pruned, samples rolled up, the small
tables' times shifted), so windows such as "the last hour" always hold data.

Timing: Django's test client in this process (DEBUG off, the site's JOBWATCH settings, a staff
superuser), each page of PAGES three ways: the full page, the htmx fragment (HX-Request: true)
and the JSON API. Warm-up requests, then `--requests` timed ones: median and p95 in ms. A route
that does not exist (yet) is reported as missing; any other status than 200 as a failure. For a
page over the target, the slowest query of one request is printed with its EXPLAIN ANALYZE.
Target: every page, fragment and API answer p95 < 50 ms.

Flower: if installed (pip install -r benchmarks/requirements.txt), its tornado app runs in a
subprocess holding 100,000 tasks fed as Celery events (the jobs of a 100,000-row database built
the same way), and its /tasks/datatable (the task list's data) is timed the same way against our
jobs list on that database.

Layout: this file is the one entry point (its options, prepare, main and the summary it prints);
the data generator is dashboard_data.py, the page list and the page timer dashboard_pages.py, the
comparison with Flower dashboard_flower.py.

Ends with one line of JSON.
"""

import argparse
import json
import os
import platform
import sys
import time
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from benchmarks.dashboard_data import (
    DATA_VERSION,
    DEFAULT_ROWS,
    REDIS_URL,
    build,
    database_name,
    fill_broker,
    log,
    read_marker,
    redis_reachable,
    refill_small_tables,
    refresh,
    table_counts,
    use_database,
)
from benchmarks.dashboard_flower import COMPARE_ROWS, COMPARISONS, compare_with_flower, flower_server
from benchmarks.dashboard_pages import PAGES, TARGET_P95_MS, pick_values, print_table, time_pages
from benchmarks.harness import python_reference_ms

MAX_REFRESH_SECONDS = 3 * 86400  # older data is rebuilt rather than topped up


# -- main ----------------------------------------------------------------------------------------


def prepare(options):
    """The database, built, reused or topped up; Django set up on it. Returns the marker."""
    import django
    from django.core.management import call_command

    name = options.database
    marker = None if options.rebuild else read_marker(name)
    reason = "--rebuild" if options.rebuild else "no data yet"
    if marker is not None:
        if marker["version"] != DATA_VERSION:
            reason, marker = f"data version {marker['version']} → {DATA_VERSION}", None
        elif marker["rows"] != options.rows:
            reason, marker = f"it holds {marker['rows']:,} rows, not {options.rows:,}", None
        elif time.time() - marker["generated_until"] > MAX_REFRESH_SECONDS:
            reason, marker = "its data is more than 3 days old", None
    if marker is None:
        log(f"Building {name} ({reason})")
        return build(name, options.rows, options.jobs), True
    log(f"Reusing {name}: {marker['rows']:,} rows, built {marker['built_at']:%Y-%m-%d %H:%M} UTC in "
        f"{marker['build_seconds']:.0f}s")
    django.setup()
    started = time.perf_counter()
    call_command("migrate", verbosity=0)  # the pages' new migrations (indexes) reach a reused database too
    if time.perf_counter() - started > 2:
        log(f"  migrations applied in {time.perf_counter() - started:.0f}s")
    if time.time() - marker["generated_until"] > 120:
        marker = refresh(name, marker, options.jobs)
    refill_small_tables(marker)
    marker["counts"].update(table_counts(name))
    return marker, False


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS, help="jobs in the history (default 10,000,000)")
    parser.add_argument("--database", help="default: jobwatch_bench_dashboard, or …_<size> for other --rows")
    parser.add_argument("--rebuild", action="store_true", help="generate the data again even if the database holds it")
    parser.add_argument("--requests", type=int, default=30, help="timed requests per page and variant")
    parser.add_argument("--warmup", type=int, default=3, help="untimed requests first")
    parser.add_argument("--budget", type=float, default=15.0, help="seconds of timed requests per variant, beyond which a slow page stops (after 5 requests at least)")
    parser.add_argument("--pages", help="only the pages whose label contains this")
    parser.add_argument("--jobs", type=int, default=max(os.cpu_count() or 1, 1), help="connections generating data at once")
    parser.add_argument("--no-flower", action="store_true", help="skip the comparison with Flower")
    parser.add_argument("--flower-tasks", type=int, default=COMPARE_ROWS, help=argparse.SUPPRESS)
    parser.add_argument("--compare-database", default=database_name(COMPARE_ROWS), help=argparse.SUPPRESS)
    parser.add_argument("--compare-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--flower-server", help=argparse.SUPPRESS)
    options = parser.parse_args()
    options.database = options.database or database_name(options.rows)

    if options.flower_server:
        return flower_server(options)

    use_database(options.database, REDIS_URL if redis_reachable() else "memory://")
    started = time.perf_counter()
    marker, built = prepare(options)
    if os.environ["CELERY_BROKER_URL"] == REDIS_URL:
        fill_broker(options.database)
    values = pick_values(options.database)
    listed = [(label, path) for label, path, _ in COMPARISONS] if options.compare_only else PAGES
    pages = [(label, path) for label, path in listed if not options.pages or options.pages in label]
    counts = marker["counts"]
    if not options.compare_only:
        log(f"\n{counts['jobs']:,} jobs, {counts['queue_samples']:,} queue samples, {counts['tallies']:,} tallies, "
            f"{counts['findings']} findings, {counts['action_logs']:,} audit entries, {counts['archived_messages']:,} "
            f"archived messages; {counts['database_gb']} GB. Build took {marker['build_seconds']:.0f}s.")
        log(f"Values: {values}")
        log(f"\nTiming {len(pages)} pages × (full, htmx fragment, api): {options.warmup} warm-up + {options.requests} "
            f"requests each (ms: p50 p95)")
    reference_ms = python_reference_ms()
    log(f"Machine reference: {reference_ms} ms for a fixed piece of Python (benchmarks/harness.py: "
        "python_reference_ms); pages scale with it from one day to the next")
    load_before = os.getloadavg()[0]
    timing_started = time.perf_counter()
    results = time_pages(pages, values, options, marker)
    timing_seconds = time.perf_counter() - timing_started
    load = round(max(load_before, os.getloadavg()[0]), 2)
    if options.compare_only:
        print(json.dumps({"rows": counts["jobs"], "values": values, "pages": results}, default=str))
        return

    print_table(results)
    measured = [(result[v]["p95"], label, v) for label, result in results.items() for v in ("full", "fragment", "api")
                if result[v]["status"] == "ok"]
    worst = max(measured) if measured else (None, None, None)
    missing = [label for label, result in results.items() if result["status"] == "missing"]
    missing_api = [label for label, result in results.items() if result["api"]["status"] == "missing"
                   and result["status"] != "missing"]
    failed = {label: result["status"] for label, result in results.items() if result["status"].startswith("FAILED")}
    log(f"\nWorst p95: {worst[0]} ms ({worst[1]}, {worst[2]}); target < {TARGET_P95_MS:.0f} ms. Timing took {timing_seconds:.0f}s.")
    if load > 0.5 * (os.cpu_count() or 1):
        log(f"WARNING: the machine was busy while timing (load average {load} on {os.cpu_count()} cores): figures are inflated")
    if missing:
        log(f"MISSING pages (no route yet): {', '.join(missing)}")
    if missing_api:
        log(f"MISSING API for: {', '.join(missing_api)}")
    for label, status in failed.items():
        log(f"FAILURE {label}: {status}")
    for label, result in results.items():
        if "diagnosis" in result:
            diagnosis = result["diagnosis"]
            log(f"\nSLOW {label} ({diagnosis['variant']}, {result['path']}): {diagnosis['queries']} queries, "
                f"{diagnosis['sql_ms']} ms in SQL; slowest:")
            if "repeated" in diagnosis:
                log(f"  {diagnosis['repeated']['count']} queries of one shape (N+1?): {diagnosis['repeated']['sql'][:300]}")
            for query in diagnosis["slowest"]:
                log(f"  {query['ms']:>8.1f} ms  {query['sql'][:600]}")
            if diagnosis.get("plan"):
                log("  plan of the slowest SELECT:\n    " + diagnosis["plan"].replace("\n", "\n    "))

    flower, why = (None, "--no-flower") if options.no_flower else compare_with_flower(options)
    pages_json = {}
    for label, result in results.items():
        entry = {"path": result["path"], "status": result["status"]}
        for variant in ("full", "fragment", "api"):
            figures = result[variant]
            entry[f"{variant}_p50"] = figures.get("p50")
            entry[f"{variant}_p95"] = figures.get("p95")
            entry[f"{variant}_status"] = figures["status"] if figures["status"] != "failed" else f"failed {figures['code']}"
        if "diagnosis" in result:
            entry["slowest_query"] = result["diagnosis"]["slowest"][0] if result["diagnosis"]["slowest"] else None
        pages_json[label] = entry
    met = bool(measured) and worst[0] < TARGET_P95_MS and not missing and not missing_api and not failed
    print(json.dumps({
        "benchmark": "dashboard", "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, PostgreSQL",
        "database": options.database, "rows": counts["jobs"], "queue_samples": counts["queue_samples"],
        "tallies": counts["tallies"], "built_now": built, "build_s": marker["build_seconds"],
        "requests": options.requests, "python_reference_ms": reference_ms, "pages": pages_json, "worst_p95_ms": worst[0], "worst": f"{worst[1]} {worst[2]}",
        "target_p95_ms": TARGET_P95_MS, "met": met, "missing": missing, "missing_api": missing_api,
        "failed": list(failed), "load_average": load, "flower": flower if flower else None,
        **({"flower_skipped": why} if flower is None else {}),
        "run_s": round(time.perf_counter() - started),
    }, default=str))



if __name__ == "__main__":
    main()
