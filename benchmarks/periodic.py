"""Periodic tasks at scale: 500 beat entries and a year of their runs among 10,000,000 recorded
jobs — the Periodic tasks page, two entries' pages (full, htmx fragment, JSON) and a pass of the
periodic detector (as beat runs it: findings recorded), each beside the same with 50 entries.

    .venv/bin/python benchmarks/periodic.py                 # builds the data on the first run
    .venv/bin/python benchmarks/periodic.py --rows 1000000 --days 30  # a quick look, in its own database
    .venv/bin/python benchmarks/periodic.py --rebuild       # generate the data again

Data: a PostgreSQL database (jobwatch_bench_periodic; other sizes get their own) holding the
dashboard benchmark's generated history (benchmarks/dashboard_data.py: jobs over 30 days, queue
samples, tallies, findings…) and the entries' runs over a year (benchmarks/periodic_data.py:
about 3.5 million), `--rows` jobs in all. A reused database has its runs topped up to now.

Timing: Django's test client in this process (DEBUG off, a staff superuser), as
benchmarks/dashboard.py times pages: warm-up, then `--requests` timed requests, median and p95.
The detector: `--passes` passes of run_detectors(["periodic"]), median and slowest. Both with
the 500 entries in the Celery app's beat_schedule and again with the first 50: the ratios say
how the cost grows with the schedule. Targets: every page p95 < 150 ms, a detector pass < 1 s.

Ends with one line of JSON.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from benchmarks.dashboard_data import (
    DATA_VERSION,
    DEFAULT_ROWS,
    build,
    log,
    read_marker,
    refill_small_tables,
    table_counts,
    use_database,
)
from benchmarks.dashboard_pages import TARGET_P95_MS, print_table, time_pages
from benchmarks.periodic_data import FAILING, add_runs, beat_schedule, expected_runs

TARGET_DETECTOR_S = 1.0
SMALL = 50  # the baseline schedule: the first 50 entries


def database_name(rows):
    return "jobwatch_bench_periodic" if rows == DEFAULT_ROWS else f"jobwatch_bench_periodic_{rows}"



def prepare(options):
    """The history (built once), the runs added or topped up; Django set up. Returns the marker."""
    import django
    from django.core.management import call_command

    name = options.database
    marker = None if options.rebuild else read_marker(name)
    history = options.rows - expected_runs(options.days)
    if history < 100_000:
        raise SystemExit(f"--rows {options.rows:,} is too few: {options.days} days of the 500 entries' runs alone are "
                         f"{expected_runs(options.days):,} (fewer --days?)")
    if marker is None or marker["version"] != DATA_VERSION or marker["rows"] != history:
        marker = build(name, history, options.jobs)
    else:
        django.setup()
        call_command("migrate", verbosity=0)
    add_runs(name, options.days, options.jobs)
    refill_small_tables(marker)
    return marker


def time_detector(passes):
    from django.utils import timezone

    from monitors.detectors import run_detectors

    seconds = []
    for _ in range(passes):
        started = time.perf_counter()
        run_detectors(["periodic"], now=timezone.now())
        seconds.append(time.perf_counter() - started)
    return {"median_s": round(statistics.median(seconds), 3), "max_s": round(max(seconds), 3), "passes": passes}


def measure(schedule, options, marker):
    """Pages and detector with `schedule` as the app's own entries (Jobwatch's kept beside them)."""
    from celery import current_app

    from monitors.models import Finding

    jobwatch_own = {name: entry for name, entry in current_app.conf.beat_schedule.items() if name.startswith("jobwatch.")}
    current_app.conf.beat_schedule = {**jobwatch_own, **schedule}
    quoted = FAILING.replace(" ", "+")
    pages = [("periodic", "/jobwatch/periodic/"), ("entry: failing", f"/jobwatch/periodic/entry/?name={quoted}"),
             ("entry: every 5 min", "/jobwatch/periodic/entry/?name=queue+probe+001")]
    results = time_pages(pages, {}, options, marker)
    detector = time_detector(options.passes)
    findings = sorted(Finding.objects.filter(detector="periodic", status="open").values_list("kind", "subject"))
    return results, detector, findings


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS, help="jobs in the history, runs included (default 10,000,000)")
    parser.add_argument("--database", help="default: jobwatch_bench_periodic, or …_<rows> for other --rows")
    parser.add_argument("--rebuild", action="store_true", help="generate the history again even if the database holds it")
    parser.add_argument("--requests", type=int, default=30, help="timed requests per page and variant")
    parser.add_argument("--warmup", type=int, default=3, help="untimed requests first")
    parser.add_argument("--budget", type=float, default=15.0, help="seconds of timed requests per variant at most")
    parser.add_argument("--days", type=int, default=365, help="days of the entries' runs (default a year)")
    parser.add_argument("--passes", type=int, default=10, help="detector passes timed")
    parser.add_argument("--prepare-only", action="store_true", help="build or top up the data, time nothing")
    parser.add_argument("--jobs", type=int, default=max(os.cpu_count() or 1, 1), help="connections generating data at once")
    options = parser.parse_args()
    options.database = options.database or database_name(options.rows)

    use_database(options.database, "memory://")  # nothing here reads a queue
    started = time.perf_counter()
    marker = prepare(options)
    if options.prepare_only:
        return
    counts = table_counts(options.database)
    schedule = beat_schedule()

    log(f"\n{counts['jobs']:,} jobs; {len(schedule)} entries. Timing pages (ms: p50 p95) and {options.passes} detector passes.")
    log(f"With all {len(schedule)} entries:")
    full, detector, findings = measure(schedule, options, marker)
    print_table(full)
    log(f"  detector: median {detector['median_s']} s, slowest {detector['max_s']} s; findings: {findings}")
    log(f"With the first {SMALL}:")
    small, small_detector, _ = measure(dict(list(schedule.items())[:SMALL]), options, marker)
    print_table(small)
    log(f"  detector: median {small_detector['median_s']} s, slowest {small_detector['max_s']} s")

    pages, ratios = {}, {}
    for label, result in full.items():
        pages[label] = {variant: result[variant].get("p95") for variant in ("full", "fragment", "api")}
        base = small[label]["full"].get("p95")
        if base and result["full"].get("p95"):
            ratios[label] = round(result["full"]["p95"] / base, 2)
    ratios["detector"] = round(detector["median_s"] / small_detector["median_s"], 2) if small_detector["median_s"] else None
    worst = max((p95 for figures in pages.values() for p95 in figures.values() if p95 is not None), default=None)
    failed = [label for label, result in full.items() if result["status"].startswith("FAILED")]
    log(f"\n{len(schedule)} entries / {SMALL} entries (p95 of the full page; the detector's median): {ratios}")
    log(f"Worst page p95 {worst} ms (target < {TARGET_P95_MS:.0f}); detector slowest {detector['max_s']} s "
        f"(target < {TARGET_DETECTOR_S:.0f} s)")
    met = worst is not None and worst < TARGET_P95_MS and detector["max_s"] < TARGET_DETECTOR_S and not failed
    print(json.dumps({
        "benchmark": "periodic", "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, PostgreSQL",
        "database": options.database, "rows": counts["jobs"], "entries": len(schedule), "pages_p95_ms": pages,
        "detector_s": detector, "baseline_entries": SMALL, "baseline_detector_s": small_detector,
        "ratio_to_baseline": ratios, "findings": [f"{kind} {subject}" for kind, subject in findings],
        "worst_p95_ms": worst, "target_p95_ms": TARGET_P95_MS, "target_detector_s": TARGET_DETECTOR_S,
        "met": met, "failed": failed, "load_average": round(os.getloadavg()[0], 2),
        "run_s": round(time.perf_counter() - started),
    }, default=str))


if __name__ == "__main__":
    main()
