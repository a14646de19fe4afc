"""The pages benchmarks/dashboard.py times, and the timer: PAGES (each timed as a full page, an
htmx fragment and its JSON answer at api_path), the values that fill their placeholders
(pick_values), the timing of one URL and of every page against TARGET_P95_MS (time_url,
time_pages, percentile), the diagnosis of a page over it (slowest_queries) and the table of
figures (row_figures, print_table).

Apart so that a page added or changed touches this file alone. It reads the data through
dashboard_data only (connect, keep_alive); dashboard_flower reuses its percentile.
"""

import math
import re
import time
from collections import Counter

from benchmarks.dashboard_data import connect, keep_alive, log, task_id_of

# Every page timed, in one place: (label, path). {placeholders} are filled from the generated
# data (see pick_values). Each one is timed as a full page, as an htmx fragment (the same path with
# HX-Request: true, and HX-Target: id when the path ends in #id), and through the JSON API at
# api_path(path).
PAGES = [
    ("overview", "/jobwatch/"),
    ("queues", "/jobwatch/queues/"),
    ("queue", "/jobwatch/queues/{queue}/"),
    ("jobs", "/jobwatch/jobs/"),
    ("jobs failed", "/jobwatch/jobs/?state=failed"),
    ("jobs task+failed", "/jobwatch/jobs/?task={task}&state=failed"),
    ("jobs text", "/jobwatch/jobs/?text={word}"),
    ("jobs far back", "/jobwatch/jobs/?before={deep_id}"),
    # The count the list asks for once it is shown: its fragment is the one the page swaps in
    # (HX-Target: job-count); the API's ?count=1 answers the list and its count.
    ("jobs count", "/jobwatch/jobs/?task={task}&state=failed&count=1#job-count"),
    ("jobs text count", "/jobwatch/jobs/?text={word}&count=1#job-count"),
    ("job", "/jobwatch/jobs/{task_id}/"),
    ("failures", "/jobwatch/failures/"),
    ("tasks", "/jobwatch/tasks/"),
    ("tasks 24h", "/jobwatch/tasks/?window=24h"),
    ("tasks 7d", "/jobwatch/tasks/?window=7d&sort=wait"),
    ("task", "/jobwatch/task/?name={task}"),
    ("task 24h", "/jobwatch/task/?name={task}&window=24h"),
    ("task 7d", "/jobwatch/task/?name={task}&window=7d"),
    ("fanout", "/jobwatch/fanout/"),
    ("fanout 24h", "/jobwatch/fanout/?window=24h"),
    ("fanout 7d", "/jobwatch/fanout/?window=7d"),
    ("orphans", "/jobwatch/orphans/"),
    ("circuits", "/jobwatch/circuits/"),
    ("workers", "/jobwatch/workers/"),
    ("findings", "/jobwatch/findings/"),
    ("alerts", "/jobwatch/alerts/"),
    ("actions", "/jobwatch/actions/"),
    ("archive", "/jobwatch/archive/"),
]


def api_path(path):
    """/jobwatch/X → /jobwatch/api/X; the overview (/jobwatch/) → /jobwatch/api/overview/."""
    rest = path.removeprefix("/jobwatch/")
    if not rest or rest.startswith("?"):
        rest = "overview/" + rest
    return "/jobwatch/api/" + rest


TARGET_P95_MS = 50.0
# What pick_values gives the pages' placeholders: things of dashboard_data's world (TEXT_WORD is
# in its EXCEPTIONS' messages).
TASK_FOR_FILTERS = "shop.send_receipt"  # the task of "jobs task+failed": mid-sized, rarely failing
QUEUE_FOR_PAGE = "crm"  # the backlogged queue: its page peeks a long queue
TEXT_WORD = "refused"  # in the payment gateway's and webhooks' connection errors


# -- timing --------------------------------------------------------------------------------------


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[max(math.ceil(fraction * len(ordered)) - 1, 0)]


def pick_values(name):
    """The concrete queue, task, ids and word the pages are asked about, from the data."""
    with connect(name) as connection:
        low, high = connection.execute("SELECT min(id), max(id) FROM monitors_jobexecution").fetchone()
        task_id = connection.execute(
            "SELECT task_id FROM monitors_jobexecution WHERE state = 'failed' AND task_name = 'shop.charge_payment' "
            "AND id < %s ORDER BY id DESC LIMIT 1", [high - (high - low) // 100]).fetchone()
    return {"queue": QUEUE_FOR_PAGE, "task": TASK_FOR_FILTERS, "word": TEXT_WORD, "deep_id": low + (high - low) // 10,
            "middle_id": low + (high - low) // 2, "task_id": task_id[0] if task_id else task_id_of(high)}


def staff_client():
    from django.contrib.auth import get_user_model
    from django.test import Client

    User = get_user_model()
    user = User.objects.filter(username="bench").first() or User.objects.create_superuser("bench", "bench@example.com", None)
    client = Client(raise_request_exception=False)  # a page that raises is a 500 to report, not a crash
    client.force_login(user)
    return client


def fetch(client, path, headers):
    response = client.get(path, headers=headers)
    if getattr(response, "streaming", False):
        size = sum(len(part) for part in response.streaming_content)
    else:
        size = len(response.content)
    return response.status_code, size, response


def time_url(client, path, headers, warmup, requests, budget):
    """{"status": ok | missing | failed, "code", "p50", "p95", "n", "bytes"} for one URL."""
    from django.urls import Resolver404, resolve

    try:
        resolve(path.split("?")[0])
    except Resolver404:
        return {"status": "missing", "code": 404}
    for n in range(max(warmup, 1)):
        before = time.perf_counter()
        code, size, response = fetch(client, path, headers)
        if code != 200:
            detail = f"HTTP {code}"
            if 300 <= code < 400:
                detail += f" → {response.get('Location')}"
            if getattr(response, "exc_info", None):
                detail += f" {response.exc_info[0].__name__}: {str(response.exc_info[1])[:200]}"
            return {"status": "failed", "code": code, "detail": detail}
        if n == 0 and time.perf_counter() - before > budget / 10:
            break  # a slow page: one warm-up is enough
    times = []
    started = time.perf_counter()
    for _ in range(requests):
        before = time.perf_counter()
        code, size, _ = fetch(client, path, headers)
        times.append((time.perf_counter() - before) * 1000)
        if code != 200:
            return {"status": "failed", "code": code, "detail": f"HTTP {code} while timing"}
        if time.perf_counter() - started > budget and len(times) >= 5:
            break
    return {"status": "ok", "code": 200, "p50": round(percentile(times, 0.5), 1), "p95": round(percentile(times, 0.95), 1),
            "n": len(times), "bytes": size}


def slowest_queries(client, path, headers, explain=True):
    """The queries of one request, slowest first, and the plan of the slowest SELECT."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        fetch(client, path, headers)
    queries = sorted(captured.captured_queries, key=lambda query: -float(query["time"]))
    report = {"queries": len(queries), "sql_ms": round(sum(float(q["time"]) for q in queries) * 1000, 1),
              "slowest": [{"ms": round(float(q["time"]) * 1000, 1), "sql": q["sql"]} for q in queries[:3]]}
    # Queries that differ only in their constants and selected columns: the same query per row (N+1),
    # e.g. a deferred field loaded for each object.
    shapes = Counter(re.sub(r"^SELECT .*? FROM ", "SELECT … FROM ", re.sub(r"\b\d+\b", "?", re.sub(r"'[^']*'", "?", q["sql"])))
                     for q in queries)
    if shapes:
        shape, count = shapes.most_common(1)[0]
        if count > 10:
            report["repeated"] = {"count": count, "sql": shape}
    select = next((q["sql"] for q in queries if q["sql"].lstrip().upper().startswith("SELECT")), None)
    if explain and select:
        try:
            with connection.cursor() as cursor:
                cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + select)
                report["plan"] = "\n".join(row[0] for row in cursor.fetchall())
        except Exception as error:  # noqa: BLE001 (a query that does not survive the round trip through its text)
            report["plan"] = f"(EXPLAIN failed: {error})"
    return report


def time_pages(pages, values, options, marker):
    client = staff_client()
    results = {}
    htmx = {"HX-Request": "true"}
    for label, template in pages:
        keep_alive(marker)
        path, _, target = template.format(**values).partition("#")  # "#id": the fragment's HX-Target
        fragment = {**htmx, "HX-Target": target} if target else htmx
        variants = {"full": (path, {}), "fragment": (path, fragment), "api": (api_path(path), {"Accept": "application/json"})}
        result = {"path": path}
        for variant, (url, headers) in variants.items():
            result[variant] = time_url(client, url, headers, options.warmup, options.requests, options.budget)
        measured = [result[v]["p95"] for v in variants if result[v]["status"] == "ok"]
        failed = [f"{v} {result[v]['detail']}" for v in variants if result[v]["status"] == "failed"]
        if result["full"]["status"] == "missing":
            status = "missing"
        elif failed:
            status = "FAILED: " + "; ".join(failed)
        elif any(p95 >= TARGET_P95_MS for p95 in measured):
            status = "over"
        else:
            status = "ok"
        result["status"] = status
        if status == "over":
            worst = max((v for v in variants if result[v]["status"] == "ok"), key=lambda v: result[v]["p95"])
            url, headers = variants[worst]
            result["diagnosis"] = {"variant": worst, **slowest_queries(client, url, headers)}
        results[label] = result
        log(f"  {label:<18} {row_figures(result)}  {status}")
    return results


def row_figures(result):
    cells = []
    for variant in ("full", "fragment", "api"):
        figures = result[variant]
        if figures["status"] == "ok":
            cells.append(f"{figures['p50']:>7.1f} {figures['p95']:>7.1f}")
        else:
            cells.append(f"{figures['status'][:7]:>15}")
    return "  ".join(cells)


def print_table(results):
    log(f"\n{'page':<18} {'path':<58} {'full p50':>8} {'p95':>7}  {'frag p50':>8} {'p95':>7}  {'api p50':>8} {'p95':>7}  verdict")
    for label, result in results.items():
        path = result["path"] if len(result["path"]) <= 58 else result["path"][:55] + "..."
        verdict = {"ok": "OK", "over": "OVER"}.get(result["status"], result["status"])
        log(f"{label:<18} {path:<58} {row_figures(result)}  {verdict}")
