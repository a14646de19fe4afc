"""The Django admin's job list at 10,000,000 jobs: Jobwatch's admin beside the same list with
Django's own defaults, in one run on one database.

    .venv/bin/python benchmarks/admin.py               # on benchmarks/dashboard.py's database (built on the first run)
    .venv/bin/python benchmarks/admin.py --requests 10

Data: benchmarks/dashboard.py's database (jobwatch_bench_dashboard: 10,000,000 jobs over 30 days,
day-partitioned when built with JOBWATCH_PARTITION_HISTORY=1), built or topped up the same way.

Two admins over the execution table, each timed on the same URLs:
- "jobwatch": the site's /admin/ (monitors/admin.py): counts as the dashboard counts
  (monitors/web/counting.py), the search box through indexes (monitors/admin_search.py), only
  the enqueue time sortable;
- "django": a second admin site, served only here, with what a ModelAdmin holds by Django's
  defaults for the same fields: its Paginator (a count of every matching row on every view), and
  search_fields of the task id, name, receiver and exception type (Django's icontains / iexact).

Timing: Django's test client in this process (DEBUG off, a superuser), as benchmarks/dashboard.py
times pages: warm-up, then `--requests` timed requests (fewer when one takes seconds: `--budget`
seconds of them per URL), median and p95. Target: every admin URL of Jobwatch's p95 < 150 ms, the
bound the periodic benchmark sets for its pages. The ratio is Django's p95 over Jobwatch's.

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
from benchmarks.dashboard import prepare
from benchmarks.dashboard_data import DEFAULT_ROWS, database_name, log, use_database
from benchmarks.dashboard_pages import TEXT_WORD, pick_values, staff_client, time_url
from benchmarks.harness import python_reference_ms

TARGET_P95_MS = 150.0
# (label, path under the admin's job list, with {placeholders} from pick_values)
URLS = [
    ("list", ""),
    ("list failed", "?state__exact=failed"),
    ("page 3", "?p=3"),
    ("search task id", "?q={task_id}"),
    ("search task name", "?q=charge_pay"),
    ("search text", "?q=" + TEXT_WORD),
    ("search no match", "?q=no-such-thing-anywhere"),
    ("one job", "{pk}/change/"),
]
SITES = {"jobwatch": "/admin/monitors/jobexecution/", "django": "/django-admin/monitors/jobexecution/"}


def stock_admin_site():
    """A second admin site whose job list has Django's defaults over the same fields."""
    from django.contrib import admin

    from monitors.models import JobExecution

    class StockJobAdmin(admin.ModelAdmin):
        list_display = ["task_name", "state", "queue", "enqueued_at", "runtime", "origin_kind", "origin_model", "origin_receiver"]
        list_filter = ["state", "origin_kind", "origin_deferred", "origin_in_atomic"]
        search_fields = ["=task_id", "task_name", "origin_receiver", "exception_type"]
        ordering = ["-id"]

    site = admin.AdminSite(name="stock_admin")
    site.register(JobExecution, StockJobAdmin)
    return site


def urlconf_with(site):
    """The site's URLs plus `site` at /django-admin/, as a module Django can be pointed at."""
    import types

    from django.urls import include, path

    module = types.ModuleType("benchmarks_admin_urls")
    module.urlpatterns = [path("django-admin/", site.urls), path("", include("dashboard.urls"))]
    sys.modules[module.__name__] = module
    return module.__name__


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS, help="jobs in the history (default 10,000,000)")
    parser.add_argument("--database", help="default: benchmarks/dashboard.py's database for --rows")
    parser.add_argument("--rebuild", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--requests", type=int, default=20, help="timed requests per URL")
    parser.add_argument("--warmup", type=int, default=2, help="untimed requests first")
    parser.add_argument("--budget", type=float, default=20.0, help="seconds of timed requests per URL (at least 5 requests)")
    parser.add_argument("--jobs", type=int, default=max(os.cpu_count() or 1, 1), help=argparse.SUPPRESS)
    options = parser.parse_args()
    options.database = options.database or database_name(options.rows)

    use_database(options.database, "memory://")  # the admin reads no queue
    started = time.perf_counter()
    marker, _ = prepare(options)
    from django.conf import settings

    from monitors.models import JobExecution

    settings.ROOT_URLCONF = urlconf_with(stock_admin_site())
    values = pick_values(options.database)
    values["pk"] = JobExecution.objects.filter(task_id=values["task_id"]).values_list("pk", flat=True).first()
    client = staff_client()
    reference_ms = python_reference_ms()
    log(f"\n{marker['counts']['jobs']:,} jobs. Machine reference: {reference_ms} ms (benchmarks/harness.py)")
    log(f"{'url':<18} {'jobwatch p50':>12} {'p95':>8}  {'django p50':>10} {'p95':>9}  {'ratio':>6}")
    results = {}
    for label, template in URLS:
        path = template.format(**values)
        row = {"path": path}
        for site, base in SITES.items():
            row[site] = time_url(client, base + path, {}, options.warmup, options.requests, options.budget)
        ours, theirs = row["jobwatch"], row["django"]
        row["ratio"] = round(theirs["p95"] / ours["p95"], 1) if ours.get("p95") and theirs.get("p95") else None
        results[label] = row
        cells = [f"{figures['p50']:>12.1f} {figures['p95']:>8.1f}" if figures["status"] == "ok"
                 else f"{figures['status'] + ' ' + str(figures.get('code', '')):>21}" for figures in (ours, theirs)]
        log(f"{label:<18} {cells[0]}  {cells[1]}  {row['ratio'] if row['ratio'] else '–':>6}")
    ours = [row["jobwatch"] for row in results.values()]
    failed = [label for label, row in results.items() if row["jobwatch"]["status"] != "ok"]
    worst = max((figures["p95"] for figures in ours if figures["status"] == "ok"), default=None)
    met = not failed and worst is not None and worst < TARGET_P95_MS
    log(f"\nWorst p95 of Jobwatch's admin: {worst} ms; target < {TARGET_P95_MS:.0f} ms: {'met' if met else 'NOT met'}"
        + (f"; failed: {', '.join(failed)}" if failed else ""))
    print(json.dumps({
        "benchmark": "admin", "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, PostgreSQL",
        "database": options.database, "rows": marker["counts"]["jobs"], "python_reference_ms": reference_ms,
        "urls": {label: {"path": row["path"], "ratio_django_over_jobwatch": row["ratio"],
                         **{f"{site}_{key}": row[site].get(key) for site in SITES for key in ("p50", "p95", "status", "n")}}
                 for label, row in results.items()},
        "worst_p95_ms": worst, "target_p95_ms": TARGET_P95_MS, "met": met, "failed": failed,
        "run_s": round(time.perf_counter() - started),
    }, default=str))


if __name__ == "__main__":
    main()
