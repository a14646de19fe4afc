"""The synthetic history benchmarks/dashboard.py times the dashboard against, and everything that
writes it: the world it describes (tasks, queues, workers, errors, outages: the constants the
other dashboard_* modules share are here), the set-based SQL that generates jobs, tallies and queue
samples, building a database, topping a reused one up to now and its marker (build, refresh,
read_marker / write_marker), the small tables filled through the ORM, what the monitor would be
writing while pages are timed (keep_alive) and the broker's waiting messages (fill_broker).

Apart from the timing so that what is measured and what it is measured on are read and changed
separately (when the generator changes, so does DATA_VERSION, and reused databases are rebuilt).
It imports none of the other dashboard_* modules.
"""

import hashlib
import json
import math
import os
import random
import time
import uuid
from concurrent.futures import ThreadPoolExecutor, as_completed
from datetime import UTC, datetime, timedelta

from benchmarks.databases import recreate_database
from monitors import timing

DEFAULT_ROWS = 10_000_000
DEFAULT_DATABASE = "jobwatch_bench_dashboard"
REDIS_URL = "redis://127.0.0.1:6379/6"
DATA_VERSION = "dashboard-data-6"  # change when the generator changes: reused databases are rebuilt

DAY = 86400
SPAN = 30 * DAY  # the history of jobs
SAMPLE_YEAR = 365 * DAY
RAW_SAMPLE_SECONDS = 2 * DAY  # SAMPLE_RAW_DAYS: raw samples are rolled up after this
ROLLUP = 600  # monitors.retention.ROLLUP_RESOLUTION
AMPLITUDE = 0.5  # daily cycle: 3x more jobs at the peak than in the trough
OMEGA = 2 * math.pi / DAY
PEAK = 14 * 3600  # the busiest time of day, UTC
BACKLOG_SECONDS = 3600  # the crm queue has been falling behind for the last hour
CIRCUIT_OPEN_SECONDS = 900  # the payment gateway's circuit opened 15 minutes ago
OUTAGE_SECONDS = (2700, 900)  # and the gateway failed from 45 to 15 minutes ago
VANISHED_SECONDS = 7800  # worker-6 vanished 2 h 10 min ago, with jobs running

QUEUES = ["default", "payments", "emails", "crm", "reports"]
# Which workers consume each queue (6 slots per queue, in QUEUES order). worker-6 is gone now.
WORKER_SLOTS = {
    "default": [1, 2, 3, 4, 5, 6], "payments": [1, 2, 1, 2, 1, 2], "emails": [3, 3, 3, 3, 5, 5],
    "crm": [4, 6, 4, 6, 4, 6], "reports": [5, 5, 5, 5, 5, 5],
}

EXCEPTIONS = {
    "connection": ("requests.exceptions.ConnectionError",
                   ("HTTPSConnectionPool(host='{host}', port=443): Max retries exceeded with url: {url} (Caused by "
                    "NewConnectionError('<urllib3.connection.HTTPSConnection object at 0x7f3a2c1d5e80>: Failed to "
                    "establish a new connection: [Errno 111] Connection refused'))"),
                   ['  File "/app/.venv/lib/python3.12/site-packages/requests/api.py", line 115, in post',
                    '    return request("post", url, data=data, json=json, **kwargs)',
                    '  File "/app/.venv/lib/python3.12/site-packages/requests/adapters.py", line 700, in send',
                    '    raise ConnectionError(e, request=request)']),
    "timeout": ("requests.exceptions.ReadTimeout", "HTTPSConnectionPool(host='{host}', port=443): Read timed out. (read timeout=10)",
                ['  File "/app/.venv/lib/python3.12/site-packages/requests/sessions.py", line 703, in send',
                 '    r = adapter.send(request, **kwargs)',
                 '  File "/app/.venv/lib/python3.12/site-packages/requests/adapters.py", line 713, in send',
                 '    raise ReadTimeout(e, request=request)']),
    "missing": ("shop.models.Order.DoesNotExist", "Order matching query does not exist.",
                ['  File "/app/.venv/lib/python3.12/site-packages/django/db/models/manager.py", line 87, in manager_method',
                 '    return getattr(self.get_queryset(), name)(*args, **kwargs)',
                 '  File "/app/.venv/lib/python3.12/site-packages/django/db/models/query.py", line 633, in get',
                 '    raise self.model.DoesNotExist(']),
    "smtp": ("smtplib.SMTPServerDisconnected", "Connection unexpectedly closed",
             ['  File "/usr/lib/python3.12/smtplib.py", line 404, in getreply',
              '    raise SMTPServerDisconnected("Connection unexpectedly closed")']),
    "keyerror": ("KeyError", "'customer_email'", ['  File "/app/{app}/serializers.py", line 41, in payload',
                                                  '    "email": data["customer_email"],']),
    "softlimit": ("celery.exceptions.SoftTimeLimitExceeded", "SoftTimeLimitExceeded()",
                  ['  File "/app/.venv/lib/python3.12/site-packages/billiard/pool.py", line 229, in soft_timeout_sighandler',
                   '    raise SoftTimeLimitExceeded()']),
}


class Task:
    def __init__(self, name, queue, weight, runtime, fail, errors, kind, model="", receiver="", *, request="",
                 parent="", circuit="", group="", host="", url="/", retries=0, result="None", kwargs="{}"):
        self.name, self.queue, self.weight, self.runtime, self.fail = name, queue, weight, runtime, fail * 1.6
        self.errors = (list(errors) * 3)[:3]  # three error slots; the first is the outage's
        self.kind, self.model, self.receiver, self.request, self.parent = kind, model, receiver, request, parent
        self.circuit, self.group, self.host, self.url = circuit, group, host, url
        self.retries, self.result, self.kwargs = retries, result, kwargs


TASKS = [
    Task("shop.charge_payment", "payments", 6, 0.8, 0.012, ["connection", "timeout", "missing"], "save", "shop.Order",
         "shop.signals.order_saved", circuit="payment-gateway", group="pay", host="api.payments-gateway.example",
         url="/v1/charges", retries=3, result="{'status': 'captured'}"),
    Task("shop.refund_payment", "payments", 0.5, 0.9, 0.015, ["connection", "timeout", "keyerror"], "request", "",
         "shop.views.refund_order", request="POST /orders/refund/", circuit="payment-gateway", group="pay",
         host="api.payments-gateway.example", url="/v1/refunds", retries=3, result="{'status': 'refunded'}"),
    Task("shop.send_receipt", "emails", 6, 0.35, 0.008, ["smtp", "missing", "keyerror"], "save", "shop.Order",
         "shop.signals.order_paid", retries=2),
    Task("shop.reserve_inventory", "default", 6, 0.05, 0.01, ["missing", "keyerror"], "save", "shop.Order",
         "shop.signals.order_saved", result="True"),
    Task("shop.release_inventory", "default", 1, 0.05, 0.005, ["missing"], "save", "shop.Order",
         "shop.signals.order_cancelled", result="True"),
    Task("shop.update_search_index", "default", 10, 0.12, 0.004, ["timeout", "missing"], "save", "shop.Product",
         "search.signals.product_saved", host="search.internal", url="/products/_doc"),
    Task("shop.generate_invoice", "reports", 3, 2.5, 0.01, ["softlimit", "missing", "keyerror"], "task",
         receiver="shop.tasks.charge_payment", parent="shop.charge_payment", result="'INV-2026-118203.pdf'"),
    Task("shop.notify_warehouse", "default", 4, 0.25, 0.015, ["connection", "timeout"], "save", "shop.Order",
         "shop.signals.order_paid", host="wms.warehouse.example", url="/api/shipments", retries=3),
    Task("shop.recalculate_cart", "default", 7, 0.03, 0.002, ["keyerror", "missing"], "request",
         receiver="shop.views.add_to_cart", request="POST /cart/items/"),
    Task("shop.expire_carts", "default", 0.1, 6.0, 0.01, ["softlimit"], "beat", result="412"),
    Task("crm.sync_contact", "crm", 9, 0.6, 0.012, ["timeout", "connection", "missing"], "save", "crm.Contact",
         "crm.signals.contact_saved", circuit="crm-api", group="crm", host="api.crm.example", url="/v3/contacts",
         retries=5),
    Task("crm.sync_company", "crm", 2, 0.7, 0.012, ["timeout", "connection", "missing"], "save", "crm.Company",
         "crm.signals.company_saved", circuit="crm-api", group="crm", host="api.crm.example", url="/v3/companies",
         retries=5),
    Task("crm.enrich_lead", "crm", 2, 1.6, 0.03, ["timeout", "keyerror"], "task", receiver="crm.tasks.sync_contact",
         parent="crm.sync_contact", circuit="crm-api", group="crm", host="api.crm.example", url="/v3/enrich"),
    Task("accounts.send_welcome_email", "emails", 2.5, 0.3, 0.01, ["smtp", "missing"], "save", "accounts.User",
         "accounts.signals.user_created", retries=2),
    Task("emails.send_newsletter_batch", "emails", 0.3, 14.0, 0.02, ["smtp", "softlimit"], "beat", result="1000"),
    Task("accounts.send_password_reset", "emails", 1, 0.25, 0.006, ["smtp"], "request",
         receiver="accounts.views.password_reset", request="POST /accounts/password/reset/", retries=2),
    Task("reports.daily_sales", "reports", 0.02, 45.0, 0.02, ["softlimit", "keyerror"], "beat"),
    Task("reports.export_orders_csv", "reports", 0.4, 9.0, 0.03, ["softlimit", "keyerror"], "request",
         receiver="reports.views.export_orders", request="POST /reports/orders/export/", kwargs='{"format": "csv"}',
         result="'exports/orders-2026-11.csv'"),
    Task("webhooks.deliver_event", "default", 12, 0.45, 0.03, ["connection", "timeout"], "task",
         receiver="webhooks.tasks.fan_out_event", parent="webhooks.fan_out_event", host="hooks.partner.example",
         url="/jobwatch-events", retries=5, result="204"),
    Task("media.make_thumbnails", "default", 4, 1.3, 0.008, ["missing", "keyerror", "softlimit"], "save",
         "media.Image", "media.signals.image_uploaded", result="3"),
]


def database_name(rows):
    if rows == DEFAULT_ROWS:
        return DEFAULT_DATABASE
    size = f"{rows // 1_000_000}m" if rows % 1_000_000 == 0 else f"{rows // 1000}k" if rows % 1000 == 0 else str(rows)
    return f"{DEFAULT_DATABASE}_{size}"


def database_url(name):
    return f"postgresql://postgres@127.0.0.1:5432/{name}"


def task_id_of(g):
    """The task id the generator gives job number g (the SQL says md5('jw:' || g)::uuid)."""
    return str(uuid.UUID(hashlib.md5(f"jw:{g}".encode()).hexdigest()))


def job_offset(g, rate_rows, t0):
    """Seconds after t0 at which job g was enqueued: evenly spread, warped into a daily cycle."""
    u = g * SPAN / rate_rows
    return u - AMPLITUDE / OMEGA * (math.sin(OMEGA * (t0 + u - PEAK)) - math.sin(OMEGA * (t0 - PEAK)))


def job_at(seconds, rate_rows, t0):
    """The last job enqueued at most `seconds` after t0."""
    lo, hi = 0, int(rate_rows * (seconds / SPAN + 1)) + 10
    while lo < hi:
        middle = (lo + hi + 1) // 2
        if job_offset(middle, rate_rows, t0) <= seconds:
            lo = middle
        else:
            hi = middle - 1
    return lo


def use_database(name, broker):
    """Point this process's Django at benchmark database `name`, with the site's settings as in
    production (DEBUG off) and `broker` (benchmarks/dashboard.py's and periodic.py's pages)."""
    os.environ["DATABASE_URL"] = database_url(name)
    os.environ["DJANGO_SETTINGS_MODULE"] = "benchmarks.dashboard_settings"
    os.environ["DEBUG"] = "0"
    os.environ.setdefault("SECRET_KEY", "benchmark-only")
    os.environ["CELERY_BROKER_URL"] = broker


def log(message):
    print(message, flush=True)


# -- the data ------------------------------------------------------------------------------------


def connect(name, autocommit=True):
    import psycopg

    return psycopg.connect(database_url(name), autocommit=autocommit)


def read_marker(name):
    import psycopg

    try:
        with connect(name) as connection:
            row = connection.execute(
                "SELECT version, rows, rate_rows, t0, generated_until, max_id, build_seconds, built_at, counts "
                "FROM bench_dataset").fetchone()
    except psycopg.OperationalError:
        return None  # no such database
    except psycopg.errors.UndefinedTable:
        return None
    if row is None:
        return None
    keys = ["version", "rows", "rate_rows", "t0", "generated_until", "max_id", "build_seconds", "built_at", "counts"]
    return dict(zip(keys, row, strict=True))


def write_marker(name, marker):
    with connect(name) as connection:
        connection.execute(
            "CREATE TABLE IF NOT EXISTS bench_dataset (version text, rows bigint, rate_rows bigint, t0 float8, "
            "generated_until float8, max_id bigint, build_seconds float8, built_at timestamptz, counts jsonb)")
        connection.execute("DELETE FROM bench_dataset")
        connection.execute(
            "INSERT INTO bench_dataset VALUES (%(version)s, %(rows)s, %(rate_rows)s, %(t0)s, %(generated_until)s, "
            "%(max_id)s, %(build_seconds)s, %(built_at)s, %(counts)s)",
            {**marker, "counts": json.dumps(marker["counts"])})


def run_statements(name, statements, jobs, settings=()):
    """Run (label, sql, params) statements on `jobs` connections at once; prints each as it ends."""
    def run(label, sql, params):
        started = time.perf_counter()
        with connect(name) as connection:
            for setting in settings:
                connection.execute(setting)
            connection.execute(sql, params)
        return label, time.perf_counter() - started

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(run, *statement) for statement in statements]
        for future in as_completed(futures):
            label, seconds = future.result()
            log(f"    {label}: {seconds:.1f}s")


def outage_boosts(t0, now):
    """Extra failure probability per 5 minutes since t0, for the payment gateway and the CRM API:
    a few outages over the month, and the payment gateway's current one."""
    length = int((now - t0) // 300) + 3
    pay, crm = [0.0] * length, [0.0] * length

    def mark(boosts, start, seconds, value):
        for index in range(max(int(start // 300), 0), min(int((start + seconds) // 300) + 1, length)):
            boosts[index] = value

    for day, minutes in ((4.6, 50), (11.3, 95), (19.8, 35), (26.1, 70)):
        mark(pay, day * DAY, minutes * 60, 0.55)
    for day, minutes in ((8.2, 40), (22.7, 120)):
        mark(crm, day * DAY, minutes * 60, 0.35)
    mark(pay, now - t0 - OUTAGE_SECONDS[0], OUTAGE_SECONDS[0] - OUTAGE_SECONDS[1], 0.6)
    return pay, crm


# Who a failure of each kind came from, as the recorder reads it off the exception (host:port and
# kind; monitors/recording/targets.py): the services detector and the job page group by it.
ERROR_TARGETS = {"connection": ("{host}:443", "connection"), "timeout": ("{host}:443", "timeout"),
                 "smtp": ("smtp.mail.example:587", "connection")}


def target_of(task, kind):
    target, error_kind = ERROR_TARGETS.get(kind, ("", ""))
    return target.format(host=task.host or "api.example"), error_kind


def traceback_of(task, kind):
    exc_type, message, frames = EXCEPTIONS[kind]
    app = (task.model or task.name).split(".")[0]
    model = (task.model or "Order.Order").split(".")[-1]
    fill = {"host": task.host or "api.example", "url": task.url, "app": app, "model": model}
    exc_type, message = exc_type.format(**fill), message.format(**fill)
    module, function = task.name.rsplit(".", 1)
    lines = [
        "Traceback (most recent call last):",
        '  File "/app/.venv/lib/python3.12/site-packages/celery/app/trace.py", line 453, in trace_task',
        "    R = retval = fun(*args, **kwargs)",
        '  File "/app/.venv/lib/python3.12/site-packages/celery/app/trace.py", line 736, in __protected_call__',
        "    return self.run(*args, **kwargs)",
        f'  File "/app/{module.replace(".", "/")}/tasks.py", line {40 + len(function) * 3}, in {function}',
        f"    result = {function}_step(*args, **kwargs)",
        *(frame.format(**fill) for frame in frames),
        f"{exc_type}: {message}",
    ]
    return exc_type, message, "\n".join(lines)


def generator_parameters(t0, now, rate_rows):
    slots = []
    for index, task in enumerate(TASKS, start=1):
        slots += [index] * round(task.weight * 10)
    errors = [traceback_of(task, kind) for task in TASKS for kind in task.errors]
    targets = [target_of(task, kind) for task in TASKS for kind in task.errors]
    pay, crm = outage_boosts(t0, now)
    return {
        "name": [t.name for t in TASKS], "queue": [t.queue for t in TASKS], "qi": [QUEUES.index(t.queue) + 1 for t in TASKS],
        "fail": [t.fail for t in TASKS], "runtime": [t.runtime for t in TASKS], "kind": [t.kind for t in TASKS],
        "model": [t.model for t in TASKS], "receiver": [t.receiver for t in TASKS], "request": [t.request for t in TASKS],
        "parent": [t.parent for t in TASKS], "circuit": [t.circuit for t in TASKS], "grp": [t.group for t in TASKS],
        "max_retries": [t.retries for t in TASKS], "result": [t.result for t in TASKS], "kwargs": [t.kwargs for t in TASKS],
        "exc_type": [e[0] for e in errors], "exc_message": [e[1] for e in errors], "traceback": [e[2] for e in errors],
        "exc_target": [t[0] for t in targets], "exc_kind": [t[1] for t in targets],
        "slot": slots, "slots": len(slots), "worker_slot": [n for queue in QUEUES for n in WORKER_SLOTS[queue]],
        "pay_boost": pay, "crm_boost": crm,
        "t0": t0, "now": now, "span": float(SPAN), "rate_rows": float(rate_rows), "amp": AMPLITUDE / OMEGA,
        "omega": OMEGA, "peak": float(PEAK), "sin0": math.sin(OMEGA * (t0 - PEAK)),
        "backlog": float(BACKLOG_SECONDS), "circuit_open": float(CIRCUIT_OPEN_SECONDS), "vanished": float(VANISHED_SECONDS),
    }


# One statement per chunk of job numbers [lo, hi]: every column from a few random numbers per row.
# Layers: base (task, time, random draws) → timed (age, runtime, queue wait, failure odds) →
# stated (state, worker) → the row.
JOBS_SQL = """
WITH p AS MATERIALIZED (SELECT
    %(name)s::text[] AS name, %(queue)s::text[] AS queue, %(qi)s::int[] AS qi, %(fail)s::float8[] AS fail,
    %(runtime)s::float8[] AS runtime, %(kind)s::text[] AS kind, %(model)s::text[] AS model,
    %(receiver)s::text[] AS receiver, %(request)s::text[] AS request, %(parent)s::text[] AS parent,
    %(circuit)s::text[] AS circuit, %(grp)s::text[] AS grp, %(max_retries)s::int[] AS max_retries,
    %(result)s::text[] AS result, %(kwargs)s::text[] AS kwargs, %(exc_type)s::text[] AS exc_type,
    %(exc_message)s::text[] AS exc_message, %(traceback)s::text[] AS traceback, %(exc_target)s::text[] AS exc_target,
    %(exc_kind)s::text[] AS exc_kind, %(slot)s::int[] AS slot,
    %(worker_slot)s::int[] AS worker_slot, %(pay_boost)s::float8[] AS pay_boost, %(crm_boost)s::float8[] AS crm_boost)
INSERT INTO monitors_jobexecution (
    id, task_id, task_name, state, progress, queue, exchange, routing_key, priority, args, kwargs, payload_size,
    payload_complete, payload_hash, eta, expires, retries, circuit, circuit_waits, enqueued_at, received_at,
    started_at, finished_at, runtime, worker, worker_pid, exception_type, error_target, error_status, error_kind,
    error_progress, exception_message,
    traceback, result, parent_id, root_id, group_id, replay_of, discarded_at, origin_kind, origin_model, origin_pk,
    origin_save, origin_created, origin_update_fields, origin_receiver, origin_in_atomic, origin_deferred,
    origin_transaction, origin_committed_at, origin_request, origin_request_id, origin_task, "references", updated_at)
SELECT
    g, md5('jw:' || g)::uuid::text, p.name[ti], state, (retries + waits) * 4 + stage, p.queue[ti], '', p.queue[ti], NULL,
    args, p.kwargs[ti]::jsonb, length(args::text) + length(p.kwargs[ti]), true,
    left(md5(p.name[ti] || args::text || p.kwargs[ti]), 16),
    CASE WHEN state IN ('retried', 'waiting') THEN to_timestamp(fin + 60) END, NULL, retries, p.circuit[ti], waits,
    to_timestamp(e), CASE WHEN state <> 'enqueued' THEN to_timestamp(e + wait) END,
    CASE WHEN state <> 'enqueued' THEN to_timestamp(e + wait + 0.002) END,
    CASE WHEN fin IS NOT NULL THEN to_timestamp(fin) END, CASE WHEN fin IS NOT NULL THEN fin - e - wait - 0.002 END,
    CASE WHEN state = 'enqueued' THEN '' ELSE 'celery@worker-' || wn END,
    CASE WHEN state = 'enqueued' THEN NULL ELSE 4000 + wn * 10 + (g %% 4)::int END,
    CASE WHEN erred THEN p.exc_type[ei] ELSE '' END, CASE WHEN erred THEN p.exc_target[ei] ELSE '' END, NULL,
    CASE WHEN erred THEN p.exc_kind[ei] ELSE '' END, CASE WHEN erred THEN (retries + waits) * 4 + stage END,
    CASE WHEN erred THEN p.exc_message[ei] ELSE '' END, CASE WHEN erred THEN p.traceback[ei] ELSE '' END,
    CASE WHEN state = 'succeeded' THEN p.result[ti] ELSE '' END,
    CASE WHEN okind = 'task' THEN md5('jw:' || greatest(g - 1 - g %% 37, 1))::uuid::text ELSE '' END,
    CASE WHEN okind = 'task' THEN md5('jw:' || greatest(g - 1 - g %% 37, 1))::uuid::text ELSE '' END, '',
    CASE WHEN r_m4 < 0.00005 AND g > 5000 THEN md5('jw:' || (g - 5000))::uuid::text ELSE '' END,
    CASE WHEN state = 'failed' AND r_m4 > 0.997 AND age > 86400 THEN to_timestamp(fin + 3600) END,
    okind, CASE WHEN okind = 'save' THEN p.model[ti] ELSE '' END, CASE WHEN okind = 'save' THEN pk::text ELSE '' END,
    CASE WHEN okind = 'save' THEN md5('save:' || p.model[ti] || ':' || (g / 4)) ELSE '' END,
    CASE WHEN okind = 'save' THEN r_m1 < 0.35 END,
    CASE WHEN okind = 'save' AND r_m1 >= 0.35 THEN
        CASE WHEN r_m2 < 0.05 THEN '["last_seen_at"]'::jsonb WHEN r_m2 < 0.5 THEN '["status", "updated_at"]'::jsonb END END,
    CASE WHEN okind <> '' THEN p.receiver[ti] ELSE '' END, atomic,
    CASE WHEN atomic AND r_m3 < 0.66 THEN 'on_commit' ELSE '' END,
    CASE WHEN atomic THEN md5('tx:' || (g / 6)) ELSE '' END,
    CASE WHEN atomic THEN to_timestamp(CASE WHEN r_m3 < 0.66 THEN e - 0.003 ELSE e + 0.04 END) END,
    CASE WHEN okind = 'request' THEN p.request[ti] ELSE '' END,
    CASE WHEN okind = 'request' THEN md5('request:' || (g / 2)) ELSE '' END,
    CASE WHEN okind = 'task' THEN p.parent[ti] ELSE '' END,
    CASE WHEN okind = 'save' THEN jsonb_build_array(jsonb_build_object(
        'arg', lower(split_part(p.model[ti], '.', 2)) || '_id', 'model', p.model[ti], 'pk', pk)) END,
    to_timestamp(coalesce(fin, CASE WHEN state <> 'enqueued' THEN e + wait + 0.002 END, e))
FROM p, (
    SELECT s.*,
        CASE WHEN state = 'enqueued' THEN 0 WHEN state = 'started' THEN 2 ELSE 3 END AS stage,
        state IN ('failed', 'retried') AS erred,
        (ti - 1) * 3 + CASE WHEN boost > 0 AND r_exc < 0.85 THEN 1 ELSE 1 + floor(r_m2 * 3)::int END AS ei,
        CASE WHEN state IN ('succeeded', 'failed', 'retried') THEN e + wait + 0.002 + rt
             WHEN state = 'waiting' THEN e + wait + 0.006 END AS fin,
        CASE WHEN state = 'waiting' THEN 1 + floor(r_m1 * 3)::int ELSE 0 END AS waits,
        CASE WHEN state = 'failed' THEN p.max_retries[ti] WHEN state = 'retried' THEN floor(r_m3 * 3)::int
             WHEN state = 'succeeded' AND r_m3 < fail_p * 2 AND p.max_retries[ti] > 0 THEN 1 ELSE 0 END AS retries,
        CASE WHEN state = 'started' AND age >= %(vanished)s - 600 AND age < %(vanished)s THEN 6
             WHEN w0 = 6 AND age < %(vanished)s THEN CASE WHEN p.queue[ti] = 'crm' THEN 4 ELSE 5 END
             ELSE w0 END AS wn,
        CASE WHEN r_origin < 0.04 THEN '' ELSE p.kind[ti] END AS okind,
        CASE WHEN r_origin >= 0.04 AND p.kind[ti] IN ('save', 'request') THEN r_m3 < 0.7 END AS atomic,
        CASE p.kind[ti] WHEN 'beat' THEN '[]'::jsonb WHEN 'request' THEN jsonb_build_array(pk, 'web')
             WHEN 'task' THEN jsonb_build_array(pk, 'evt_' || left(md5(g::text), 12)) ELSE jsonb_build_array(pk) END AS args
    FROM p, (
        SELECT t.*,
            CASE
                WHEN p.circuit[ti] = 'payment-gateway' AND age < %(circuit_open)s THEN 'waiting'
                WHEN p.queue[ti] = 'crm' AND age < %(backlog)s AND r_state < 0.85 THEN 'enqueued'
                WHEN age < 150 AND r_state < 0.45 THEN 'enqueued'
                WHEN age < wait THEN 'enqueued'
                WHEN age < 150 AND r_state < 0.55 THEN 'started'
                WHEN age >= %(vanished)s - 600 AND age < %(vanished)s AND r_state < 0.04 THEN 'started'
                WHEN age < wait + 0.002 + rt THEN 'started'
                WHEN age < 600 AND r_state < 0.01 THEN 'retried'
                WHEN r_fail < fail_p THEN 'failed'
                WHEN r_fail > 0.9995 THEN 'retried'
                ELSE 'succeeded'
            END AS state,
            p.worker_slot[(p.qi[ti] - 1) * 6 + 1 + floor(r_worker * 6)::int] AS w0
        FROM p, (
            SELECT b.*, %(now)s - e AS age,
                p.runtime[ti] * exp(0.6 * ((r1 + r2 + r3) * 2 - 3)) AS rt,
                CASE WHEN p.queue[ti] = 'crm' AND %(now)s - e < %(backlog)s THEN (%(now)s - e) * r_wait
                     ELSE 0.004 + 0.08 * r_wait * r_wait * r_wait END AS wait,
                CASE p.grp[ti] WHEN 'pay' THEN p.pay_boost[1 + floor((e - %(t0)s) / 300)::int]
                               WHEN 'crm' THEN p.crm_boost[1 + floor((e - %(t0)s) / 300)::int] ELSE 0 END AS boost,
                p.fail[ti] + CASE p.grp[ti] WHEN 'pay' THEN p.pay_boost[1 + floor((e - %(t0)s) / 300)::int]
                                            WHEN 'crm' THEN p.crm_boost[1 + floor((e - %(t0)s) / 300)::int] ELSE 0 END AS fail_p
            FROM p, (
                SELECT g, p.slot[1 + floor(random() * %(slots)s::float8)::int] AS ti, 100000 + g / 3 AS pk,
                    %(t0)s + u - %(amp)s * (sin(%(omega)s * (%(t0)s + u - %(peak)s)) - %(sin0)s) AS e,
                    random() AS r_state, random() AS r_fail, random() AS r_exc, random() AS r1, random() AS r2,
                    random() AS r3, random() AS r_wait, random() AS r_worker, random() AS r_origin, random() AS r_m1,
                    random() AS r_m2, random() AS r_m3, random() AS r_m4
                FROM p, generate_series(%(lo)s::bigint, %(hi)s::bigint) AS g,
                     LATERAL (SELECT g * %(span)s / %(rate_rows)s AS u) AS x
            ) b
        ) t
    ) s
) z
"""

# JobTally as the recorder's writer keeps it: per minute, task, queue and (for failures) the
# exception's class name: sent when enqueued, started, then succeeded / failed / retried (a
# circuit wait counts as retried), with the runtime of succeeded and failed jobs; earlier attempts
# of retried jobs count as retried when the last one started.
TALLY_SQL = """
INSERT INTO monitors_jobtally (minute, metric, task_name, queue, exception, count, runtime_sum)
SELECT date_trunc('minute', v.at), v.metric, j.task_name, j.queue, v.exception, sum(v.n), sum(v.rt)
FROM monitors_jobexecution j CROSS JOIN LATERAL (VALUES
    (j.enqueued_at, 'sent', '', 1, 0.0::float8),
    (j.started_at, 'started', '', 1, 0.0::float8),
    (CASE WHEN j.state IN ('succeeded', 'failed', 'retried', 'waiting') THEN j.finished_at END,
     CASE j.state WHEN 'succeeded' THEN 'succeeded' WHEN 'failed' THEN 'failed' ELSE 'retried' END,
     CASE WHEN j.state = 'failed' THEN regexp_replace(j.exception_type, '^.*\\.', '') ELSE '' END, 1,
     CASE WHEN j.state IN ('succeeded', 'failed') THEN coalesce(j.runtime, 0) ELSE 0 END),
    (CASE WHEN j.retries > 0 THEN j.started_at END, 'retried', '', j.retries, 0.0::float8)
) AS v(at, metric, exception, n, rt)
WHERE j.id BETWEEN %(lo)s AND %(hi)s AND v.at IS NOT NULL AND v.at >= %(since)s
GROUP BY 1, 2, 3, 4, 5
ON CONFLICT (minute, metric, task_name, queue, exception) DO UPDATE
    SET count = monitors_jobtally.count + EXCLUDED.count, runtime_sum = monitors_jobtally.runtime_sum + EXCLUDED.runtime_sum
"""

# OriginTally as the recorder's writer keeps it (monitors/recording/origin_tally.py): jobs a save,
# delete or signal set off, per minute (`unit` minute, resolution 60) or hour (hour, 3600), origin
# and task, in UTC; each save counted once per receiver and once in all, in the row of its first job.
ORIGIN_TALLY_SQL = """
INSERT INTO monitors_origintally (start, resolution, origin_kind, origin_model, origin_receiver, task_name, jobs, saved_jobs,
                                  saves, model_saves)
SELECT date_trunc(%(unit)s, enqueued_at, 'UTC'), %(resolution)s, origin_kind, origin_model, origin_receiver, task_name, count(*),
       count(*) FILTER (WHERE origin_save <> ''), count(*) FILTER (WHERE origin_save <> '' AND first_for_receiver),
       count(*) FILTER (WHERE origin_save <> '' AND first_of_save)
FROM (SELECT enqueued_at, origin_kind, origin_model, origin_receiver, task_name, origin_save,
             row_number() OVER (PARTITION BY origin_save, origin_receiver ORDER BY enqueued_at, id) = 1 AS first_for_receiver,
             row_number() OVER (PARTITION BY origin_save ORDER BY enqueued_at, id) = 1 AS first_of_save
      FROM monitors_jobexecution
      WHERE id BETWEEN %(lo)s AND %(hi)s AND enqueued_at >= %(since)s AND origin_kind IN ('save', 'delete', 'signal')
        AND origin_receiver <> '') j
GROUP BY 1, 2, 3, 4, 5, 6
ON CONFLICT (resolution, start, origin_kind, origin_model, origin_receiver, task_name) DO UPDATE
    SET jobs = monitors_origintally.jobs + EXCLUDED.jobs, saved_jobs = monitors_origintally.saved_jobs + EXCLUDED.saved_jobs,
        saves = monitors_origintally.saves + EXCLUDED.saves, model_saves = monitors_origintally.model_saves + EXCLUDED.model_saves
"""

# JobHistogram as the recorder's writer keeps it: the runtime of succeeded and failed jobs when
# they finished, the queue wait (enqueued → started) when they started, in monitors/timing.py's
# buckets, per day (`unit` day, resolution 86400), hour (hour, 3600) or minute (minute, 60), in
# UTC whatever the server's time zone. A time's bucket is the first bound at or above it
# (timing.bucket_of): the number of bounds ≥ x is width_bucket(-x, the bounds negated,
# ascending), which counts from the top.
HISTOGRAM_SQL = """
INSERT INTO monitors_jobhistogram (start, resolution, task_name, measure, outcome, upper_ms, count, total)
SELECT date_trunc(%(unit)s, v.at, 'UTC'), %(resolution)s, j.task_name, v.measure, v.outcome,
       (%(uppers)s::bigint[])[%(bound_count)s + 1 - width_bucket(-v.seconds * 1000, %(negated)s::float8[])],
       count(*), sum(v.seconds)
FROM monitors_jobexecution j CROSS JOIN LATERAL (VALUES
    (CASE WHEN j.state IN ('succeeded', 'failed') THEN j.finished_at END, 'runtime', j.state, j.runtime),
    (j.started_at, 'wait', '', greatest(extract(epoch FROM j.started_at - j.enqueued_at)::float8, 0))
) AS v(at, measure, outcome, seconds)
WHERE j.id BETWEEN %(lo)s AND %(hi)s AND v.at IS NOT NULL AND v.seconds IS NOT NULL AND v.at >= %(since)s
GROUP BY 1, 2, 3, 4, 5, 6
ON CONFLICT (task_name, resolution, start, measure, outcome, upper_ms) DO UPDATE
    SET count = monitors_jobhistogram.count + EXCLUDED.count, total = monitors_jobhistogram.total + EXCLUDED.total
"""
MINUTE_HISTOGRAM_SECONDS = 3 * DAY  # monitors.retention.MINUTE_HISTOGRAM_DAYS


def histogram_statements(rate_rows, t0, now, since=None, last_id=None):
    """Daily and hourly histograms of every job (or those since `since`, from the start of its
    day and hour) and per-minute ones of the last 3 days."""
    last_id = last_id or rate_rows
    statements = []
    daily_since = math.floor(since / DAY) * DAY if since else 0
    hourly_since = math.floor(since / 3600) * 3600 if since else 0
    minute_since = max(since or 0, now - MINUTE_HISTOGRAM_SECONDS)
    for label, unit, resolution, start in (("daily histograms", "day", DAY, daily_since),
                                            ("hourly histograms", "hour", 3600, hourly_since),
                                            ("per-minute histograms", "minute", 60, minute_since)):
        # Jobs enqueued up to 6 hours before may have started or finished in the range.
        first = max(job_at(start - 6 * 3600 - t0, rate_rows, t0), 1) if start else 1
        statements.append((label, HISTOGRAM_SQL, {
            "unit": unit, "resolution": resolution, "lo": first, "hi": last_id,
            "since": datetime.fromtimestamp(start, UTC), "bound_count": len(timing.BOUNDS_MS),
            "negated": [-float(bound) for bound in reversed(timing.BOUNDS_MS)], "uppers": list(timing.UPPER_BOUNDS_MS)}))
    return statements


# Queue samples every `step` from `start` to `end` for every queue: arrivals follow the jobs'
# daily cycle; the crm queue has been growing for BACKLOG_SECONDS with one consumer left; the
# payment queue's jobs wait in workers (scheduled) while its circuit is open.
SAMPLES_SQL = """
INSERT INTO monitors_queuesample (queue, sampled_at, resolution, broker, depth, depth_by_priority, in_flight,
    scheduled, consumers, workers, oldest_age, arrivals_per_minute, drains_per_minute, exists_on_broker, error)
SELECT q.name, s.at, %(resolution)s, 'redis',
    CASE WHEN q.name = 'crm' AND age < %(backlog)s THEN round(arrivals * 0.85 * (%(backlog)s - age) / 60)
         ELSE floor(arrivals * (0.02 + 0.4 * r2 * r2 * r2) * %(peak_factor)s) END,
    NULL, least(floor(r3 * 7), 6), CASE WHEN q.name = 'payments' AND age < %(circuit_open)s
        THEN round(arrivals * 0.93 * (%(circuit_open)s - age) / 60) ELSE 0 END,
    CASE WHEN age < %(vanished)s THEN q.after_count ELSE q.before_count END,
    CASE WHEN age < %(vanished)s THEN q.after ELSE q.before END::jsonb,
    CASE WHEN q.name = 'crm' AND age < %(backlog)s THEN %(backlog)s - age
         WHEN r2 > 0.3 THEN 0.2 + 25 * r3 * r3 * r3 * %(peak_factor)s END,
    arrivals, CASE WHEN q.name = 'crm' AND age < %(backlog)s THEN arrivals * 0.15 ELSE arrivals * (0.97 + 0.06 * r2) END,
    true, ''
FROM unnest(%(names)s::text[], %(rates)s::float8[], %(before)s::text[], %(after)s::text[], %(before_count)s::int[],
            %(after_count)s::int[]) AS q(name, rate, before, after, before_count, after_count),
     generate_series(to_timestamp(%(start)s), to_timestamp(%(end)s), make_interval(secs => %(step)s)) AS s(at),
     LATERAL (SELECT %(now)s - extract(epoch FROM s.at) AS age, random() AS r1, random() AS r2, random() AS r3) AS x,
     LATERAL (SELECT q.rate * %(norm)s / (1 - %(amplitude)s * cos(%(omega)s * (extract(epoch FROM s.at) - %(peak)s)))
                     * (0.9 + 0.2 * x.r1) AS arrivals) AS y
"""

ROLLUP_SQL = """
INSERT INTO monitors_queuesample (queue, sampled_at, resolution, broker, depth, depth_by_priority, in_flight,
    scheduled, consumers, workers, oldest_age, arrivals_per_minute, drains_per_minute, exists_on_broker, error)
SELECT queue, to_timestamp(floor(extract(epoch FROM sampled_at) / %(rollup)s) * %(rollup)s), %(rollup)s, max(broker),
    max(depth), NULL, max(in_flight), max(scheduled), (array_agg(consumers ORDER BY sampled_at DESC))[1],
    (array_agg(workers ORDER BY sampled_at DESC))[1], max(oldest_age), avg(arrivals_per_minute),
    avg(drains_per_minute), bool_or(exists_on_broker), ''
FROM monitors_queuesample WHERE resolution = 0 AND sampled_at < to_timestamp(%(cutoff)s)
GROUP BY queue, 2
ON CONFLICT DO NOTHING
"""


def sample_parameters(rate_rows, now, resolution, start, end, step):
    total_weight = sum(task.weight for task in TASKS)
    per_minute = rate_rows / (SPAN / 60)
    names, rates, before, after, before_count, after_count = [], [], [], [], [], []
    for queue in QUEUES:
        share = sum(task.weight for task in TASKS if task.queue == queue) / total_weight
        workers = sorted(set(WORKER_SLOTS[queue]))
        names.append(queue)
        rates.append(per_minute * share)
        before.append(json.dumps([f"celery@worker-{n}" for n in workers]))
        left = [n for n in workers if n != 6]
        after.append(json.dumps([f"celery@worker-{n}" for n in left]))
        before_count.append(len(workers))
        after_count.append(len(left))
    return {
        "names": names, "rates": rates, "before": before, "after": after, "before_count": before_count,
        "after_count": after_count, "resolution": resolution, "start": float(start), "end": float(end),
        "step": float(step), "now": float(now), "norm": math.sqrt(1 - AMPLITUDE ** 2), "amplitude": AMPLITUDE,
        "omega": OMEGA, "peak": float(PEAK), "backlog": float(BACKLOG_SECONDS), "circuit_open": float(CIRCUIT_OPEN_SECONDS),
        "vanished": float(VANISHED_SECONDS), "peak_factor": 3.0 if resolution else 1.0,
    }


def job_chunks(lo, hi, parameters, jobs):
    size = min(500_000, max(10_000, (hi - lo + 1) // (jobs * 4)))
    for start in range(lo, hi + 1, size):
        end = min(start + size - 1, hi)
        yield f"jobs {start:,}–{end:,}", JOBS_SQL, {**parameters, "lo": start, "hi": end}


def secondary_indexes(connection, table):
    """[(drop, create, then)] statements of the table's indexes other than its primary key. On a
    partitioned table (PostgreSQL's day partitions, monitors/partitions.py) an index made on the
    table is made on every partition; a unique constraint cannot adopt an index there, so it is
    made again whole, after the others (`create` None)."""
    partitioned = connection.execute("SELECT relkind = 'p' FROM pg_class WHERE oid = %s::regclass", [table]).fetchone()[0]
    rows = connection.execute("""
        SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid), c.conname, pg_get_constraintdef(c.oid)
        FROM pg_index i LEFT JOIN pg_constraint c ON c.conindid = i.indexrelid AND c.conrelid = i.indrelid
        WHERE i.indrelid = %s::regclass AND NOT i.indisprimary ORDER BY 1""", [table]).fetchall()
    statements = []
    for index, definition, constraint, _constraint_definition in rows:  # noqa: B007 (read above)
        # A partitioned table's index prints as "ON ONLY table": made so, it would cover no partition.
        definition = definition.replace(" ON ONLY ", " ON ", 1)
        if constraint and partitioned:
            statements.append((f'ALTER TABLE {table} DROP CONSTRAINT "{constraint}"', None,
                               f'ALTER TABLE {table} ADD CONSTRAINT "{constraint}" {_constraint_definition}'))
        elif constraint:
            # Built as a plain unique index (a SHARE lock, so the other indexes build alongside),
            # then attached to its constraint.
            statements.append((f'ALTER TABLE {table} DROP CONSTRAINT "{constraint}"', definition,
                               f'ALTER TABLE {table} ADD CONSTRAINT "{constraint}" UNIQUE USING INDEX {index}'))
        else:
            statements.append((f"DROP INDEX {index}", definition, None))
    return statements


def index_statements(indexes):
    """(label, create, None) for run_statements: the indexes secondary_indexes() dropped."""
    return [(create.split(" ON ")[0].replace("CREATE ", ""), create, None) for _, create, _ in indexes if create]


def make_days(start, end):
    """PostgreSQL's day partitions of the job history from `start` to `end` (epoch seconds), where
    the table is partitioned (this process's Django database): generated rows land in their day."""
    from django.db import connection as django_connection

    from monitors import partitions

    partitions.ensure_days(django_connection, datetime.fromtimestamp(start, UTC), datetime.fromtimestamp(end, UTC))


def set_logged(connection, table, logged):
    """ALTER TABLE … SET [UN]LOGGED on the table, or on each partition of a partitioned one (which
    holds no rows of its own, and takes neither)."""
    leaves = [row[0] for row in connection.execute(
        "SELECT inhrelid::regclass::text FROM pg_inherits WHERE inhparent = %s::regclass", [table]).fetchall()]
    for leaf in leaves or [table]:
        connection.execute(f"ALTER TABLE {leaf} SET {'LOGGED' if logged else 'UNLOGGED'}")


def build(name, rows, jobs):
    """A new database with `rows` jobs ending now, and everything else. Returns the marker."""
    import django
    from django.core.management import call_command

    started = time.perf_counter()
    log(f"Building {name}: {rows:,} jobs over 30 days, a year of queue samples…")
    recreate_database(name)
    django.setup()
    call_command("migrate", verbosity=0)
    now = time.time()
    t0 = now - SPAN
    parameters = generator_parameters(t0, now, rows)
    make_days(t0, now + 7 * DAY)
    with connect(name) as connection:
        indexes = secondary_indexes(connection, "monitors_jobexecution")
        for drop, _, _ in indexes:
            connection.execute(drop)
        # Loaded without WAL, then written to the WAL in one pass (a table rewrite), before the
        # indexes are built: a third faster than row-by-row WAL here.
        set_logged(connection, "monitors_jobexecution", False)
    phase = time.perf_counter()
    log(f"  jobs ({len(indexes)} secondary indexes dropped, {jobs} connections):")
    run_statements(name, list(job_chunks(1, rows, parameters, jobs)), jobs, settings=["SET synchronous_commit = off"])
    with connect(name) as connection:
        set_logged(connection, "monitors_jobexecution", True)
    inserted = time.perf_counter() - phase
    log(f"  {rows:,} jobs inserted in {inserted:.0f}s")
    phase = time.perf_counter()
    statements = index_statements(indexes)
    statements.sort(key=lambda statement: "task_id" not in statement[1])  # the widest first
    statements.append(("tallies", TALLY_SQL, {"lo": 1, "hi": rows, "since": datetime.fromtimestamp(0, UTC)}))
    statements += [(f"origin tallies per {unit}", ORIGIN_TALLY_SQL,
                    {"lo": 1, "hi": rows, "since": datetime.fromtimestamp(0, UTC), "unit": unit, "resolution": resolution})
                   for unit, resolution in (("minute", 60), ("hour", 3600))]
    statements += histogram_statements(rows, t0, now)
    statements += sample_statements(rows, now)
    log("  indexes, tallies and samples:")
    run_statements(name, statements, jobs, settings=[
        "SET maintenance_work_mem = '1GB'", "SET work_mem = '512MB'", "SET max_parallel_maintenance_workers = 0",
        "SET synchronous_commit = off"])
    indexed = time.perf_counter() - phase
    phase = time.perf_counter()
    with connect(name) as connection:
        for _, _, then in indexes:
            if then:
                connection.execute(then)
        connection.execute("SELECT setval(pg_get_serial_sequence('monitors_jobexecution', 'id'), %s)", [rows])
        connection.execute("VACUUM (ANALYZE) monitors_jobexecution")
        connection.execute("VACUUM (ANALYZE) monitors_jobtally")
        connection.execute("VACUUM (ANALYZE) monitors_origintally")
        connection.execute("VACUUM (ANALYZE) monitors_jobhistogram")
        connection.execute("VACUUM (ANALYZE) monitors_queuesample")
    vacuumed = time.perf_counter() - phase
    fill_small_tables(now, t0, rows, rows)
    seconds = time.perf_counter() - started
    marker = {"version": DATA_VERSION, "rows": rows, "rate_rows": rows, "t0": t0, "generated_until": now, "max_id": rows,
              "build_seconds": round(seconds, 1), "built_at": datetime.fromtimestamp(now, UTC),
              "counts": {"insert_s": round(inserted, 1), "index_tally_sample_s": round(indexed, 1),
                         "vacuum_s": round(vacuumed, 1), **table_counts(name)}}
    write_marker(name, marker)
    log(f"Built {name} in {seconds:.0f}s (jobs {inserted:.0f}s, indexes + tallies + samples {indexed:.0f}s, "
        f"vacuum {vacuumed:.0f}s)")
    return marker


def sample_statements(rate_rows, now, since=None):
    """Raw samples for the last 2 days (or since `since`) and, on a build, 10-minute ones for the
    year before them: what roll_up_samples leaves behind."""
    raw_start = math.ceil((since if since else now - RAW_SAMPLE_SECONDS) / 15) * 15
    statements = [("raw queue samples", SAMPLES_SQL, sample_parameters(rate_rows, now, 0, raw_start, now, 15))]
    if since is None:
        rolled_start = math.ceil((now - SAMPLE_YEAR) / ROLLUP) * ROLLUP
        rolled_end = math.floor((now - RAW_SAMPLE_SECONDS) / ROLLUP) * ROLLUP - ROLLUP
        statements.append(("10-minute queue samples", SAMPLES_SQL,
                           sample_parameters(rate_rows, now, ROLLUP, rolled_start, rolled_end, ROLLUP)))
    return statements


def refresh(name, marker, jobs):
    """Bring a reused database up to now: the last 3 hours of jobs generated again as of now and
    the jobs since (the oldest pruned, so the history stays 30 days), their tallies, the raw
    samples since and the roll-up of those older than 2 days. (The small tables are filled again
    on every run: refill_small_tables.)"""
    now = time.time()
    old_now, t0, rate_rows, max_id = marker["generated_until"], marker["t0"], marker["rate_rows"], marker["max_id"]
    delta = now - old_now
    started = time.perf_counter()
    log(f"Topping up {name}: generated {delta / 3600:.1f} h ago…")
    # The last 3 hours are generated again as of now (what was live then has finished; what is
    # live now is), then the jobs since.
    first_new = min(max_id + 1, job_at(now - 3 * 3600 - t0, rate_rows, t0))
    last_new = job_at(now - t0, rate_rows, t0)
    parameters = generator_parameters(t0, now, rate_rows)
    with connect(name) as connection:
        connection.execute("DELETE FROM monitors_jobexecution WHERE id >= %s", [first_new])
    run_statements(name, list(job_chunks(first_new, last_new, parameters, jobs)), jobs,
                   settings=["SET synchronous_commit = off"])
    regenerated_from = t0 + job_offset(first_new, rate_rows, t0)
    max_id = last_new
    since = datetime.fromtimestamp(math.floor(regenerated_from / 60) * 60, UTC)
    with connect(name) as connection:
        connection.execute("SET work_mem = '256MB'")
        connection.execute("SELECT setval(pg_get_serial_sequence('monitors_jobexecution', 'id'), %s)", [max_id])
        pruned = connection.execute("DELETE FROM monitors_jobexecution WHERE id <= %s",
                                    [job_at(now - SPAN - t0, rate_rows, t0)]).rowcount
        connection.execute("DELETE FROM monitors_jobtally WHERE minute >= %s OR minute < %s",
                           [since, datetime.fromtimestamp(now - SPAN, UTC)])
        connection.execute(TALLY_SQL, {"lo": job_at(regenerated_from - 6 * 3600 - t0, rate_rows, t0), "hi": max_id, "since": since})
        # Hour rows from the start of the hour the regenerated jobs begin in, so that none is partial.
        since_hour = datetime.fromtimestamp(math.floor(since.timestamp() / 3600) * 3600, UTC)
        connection.execute("DELETE FROM monitors_origintally WHERE (resolution = 60 AND start >= %s) OR (resolution = 3600 AND "
                           "start >= %s) OR start < %s", [since, since_hour, datetime.fromtimestamp(now - SPAN, UTC)])
        for unit, resolution, start in (("minute", 60, since), ("hour", 3600, since_hour)):
            connection.execute(ORIGIN_TALLY_SQL, {"lo": job_at(start.timestamp() - 6 * 3600 - t0, rate_rows, t0), "hi": max_id,
                                                  "since": start, "unit": unit, "resolution": resolution})
        since_day = datetime.fromtimestamp(math.floor(since.timestamp() / DAY) * DAY, UTC)
        connection.execute("DELETE FROM monitors_jobhistogram WHERE (resolution = 86400 AND (start >= %s OR start < %s))"
                           " OR (resolution = 3600 AND (start >= %s OR start < %s))"
                           " OR (resolution = 60 AND (start >= %s OR start < %s))",
                           [since_day, datetime.fromtimestamp(now - SPAN, UTC), since_hour,
                            datetime.fromtimestamp(now - SPAN, UTC), since,
                            datetime.fromtimestamp(now - MINUTE_HISTOGRAM_SECONDS, UTC)])
        for _, sql, histogram_params in histogram_statements(rate_rows, t0, now, since=since.timestamp(), last_id=max_id):
            connection.execute(sql, histogram_params)
        last_raw = connection.execute("SELECT extract(epoch FROM max(sampled_at)) FROM monitors_queuesample").fetchone()[0]
        for _, sql, sample_params in sample_statements(rate_rows, now, since=float(last_raw) + 15):
            connection.execute(sql, sample_params)
        connection.execute(ROLLUP_SQL, {"rollup": ROLLUP, "cutoff": now - RAW_SAMPLE_SECONDS})
        connection.execute("DELETE FROM monitors_queuesample WHERE resolution = 0 AND sampled_at < to_timestamp(%s)",
                           [now - RAW_SAMPLE_SECONDS])
        connection.execute("DELETE FROM monitors_queuesample WHERE sampled_at < to_timestamp(%s)", [now - SAMPLE_YEAR])
    # VACUUM as after a build: the hours this stands for are hours in which autovacuum would have
    # marked the rewritten pages all-visible (the Tasks pages read the histogram index alone only
    # there).
    with connect(name) as connection:
        for table in ("monitors_jobexecution", "monitors_jobtally", "monitors_origintally", "monitors_jobhistogram",
                      "monitors_queuesample"):
            connection.execute(f"VACUUM (ANALYZE) {table}")
    seconds = time.perf_counter() - started
    log(f"  {last_new - first_new + 1:,} jobs generated (from {datetime.fromtimestamp(regenerated_from, UTC):%H:%M} UTC), "
        f"{pruned:,} older than 30 days pruned, in {seconds:.0f}s")
    marker = {**marker, "generated_until": now, "max_id": max_id,
              "counts": {**marker["counts"], **table_counts(name), "last_refresh_s": round(seconds, 1)}}
    write_marker(name, marker)
    return marker


def table_counts(name):
    tables = {"jobs": "monitors_jobexecution", "queue_samples": "monitors_queuesample", "tallies": "monitors_jobtally",
              "origin_tallies": "monitors_origintally", "histograms": "monitors_jobhistogram",
              "findings": "monitors_finding", "incidents": "monitors_incident", "circuits": "monitors_circuit",
              "recorder_processes": "monitors_recorderprocess", "action_logs": "monitors_actionlog",
              "archived_messages": "monitors_archivedmessage"}
    with connect(name) as connection:
        counts = {key: connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for key, table in tables.items()}
        counts["database_gb"] = round(connection.execute("SELECT pg_database_size(current_database())").fetchone()[0] / 1e9, 2)
    return counts


# -- the small tables (a few thousand rows: the ORM is fine) --------------------------------------


SMALL_MODELS = ("Notification", "Incident", "Finding", "NotificationChannel", "ReplayRecord", "ArchivedMessage", "ActionLog",
                "CircuitEvent", "Circuit", "RecorderProcess", "MonitorHeartbeat")


def refill_small_tables(marker):
    """The small tables emptied and filled again as of now, as the models are now (pages and
    models change while the big tables are reused)."""
    from django.apps import apps
    from django.db import connection

    started = time.perf_counter()
    tables = [apps.get_model("monitors", model)._meta.db_table for model in SMALL_MODELS]
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE")
    fill_small_tables(time.time(), marker["t0"], marker["rate_rows"], marker["max_id"])
    log(f"  findings, incidents, circuits, processes, audit log and archive filled again in {time.perf_counter() - started:.0f}s")


def keep_alive(marker):
    """Between pages, what the monitor would be writing: the queue sampler's new rows, the live
    workers' heartbeats and the periodic tasks' beats, so that "now" stays now during a long run."""
    from django.db import connection
    from django.utils import timezone

    from monitors.models import MonitorHeartbeat, RecorderProcess

    now = time.time()
    with connection.cursor() as cursor:
        cursor.execute("SELECT extract(epoch FROM max(sampled_at)) FROM monitors_queuesample WHERE resolution = 0")
        last = float(cursor.fetchone()[0])
        if now - last >= 15:
            for _, sql, parameters in sample_statements(marker["rate_rows"], now, since=last + 15):
                cursor.execute(sql, parameters)
    moment = timezone.now()
    RecorderProcess.objects.filter(last_flush_at__gte=moment - timedelta(minutes=10)).update(last_flush_at=moment)
    MonitorHeartbeat.objects.update(last_run_at=moment)


def fill_small_tables(now_epoch, t0, rate_rows, max_id):
    from django.db import connection

    from monitors.models import (
        ActionLog,
        ArchivedMessage,
        Circuit,
        CircuitEvent,
        Finding,
        Incident,
        MonitorHeartbeat,
        Notification,
        NotificationChannel,
        RecorderProcess,
    )

    rng = random.Random(11)
    now = datetime.fromtimestamp(now_epoch, UTC)

    def moment(seconds_ago):
        return now - timedelta(seconds=seconds_ago)

    def ids_near(seconds_ago, count=10, task=None):
        g = job_at(now_epoch - seconds_ago - t0, rate_rows, t0)
        return [task_id_of(max(g - n * 7, 1)) for n in range(count)]

    def failed_ids(task_name, state="failed", count=10, before=None):
        with connection.cursor() as cursor:
            cursor.execute("SELECT task_id FROM monitors_jobexecution WHERE task_name = %s AND state = %s AND id <= %s "
                           "ORDER BY id DESC LIMIT %s", [task_name, state, before or max_id, count])
            return [row[0] for row in cursor.fetchall()]

    # Circuits: the payment gateway open now; the CRM API closed after its outages; SMTP closed.
    pay_events, crm_events = [], []
    for day, minutes in ((4.6, 50), (11.3, 95), (19.8, 35), (26.1, 70)):
        start = SPAN - day * DAY
        pay_events += outage_events("payment-gateway", moment(start), minutes, "requests.exceptions.ConnectionError")
    for day, minutes in ((8.2, 40), (22.7, 120)):
        start = SPAN - day * DAY
        crm_events += outage_events("crm-api", moment(start), minutes, "requests.exceptions.ReadTimeout")
    opened = moment(CIRCUIT_OPEN_SECONDS)
    pay_events.append(CircuitEvent(circuit="payment-gateway", at=opened, from_state="closed", to_state="open",
                                   cause="5 consecutive failures", actor="celery@worker-1 pid 4012 job shop.charge_payment",
                                   consecutive_failures=5, window_calls=212, window_failures=118,
                                   error_type="requests.exceptions.ConnectionError", error=traceback_of(TASKS[0], "connection")[1]))
    for n in range(1, 4):
        at = opened + timedelta(seconds=60 * n * 4)
        pay_events += [
            CircuitEvent(circuit="payment-gateway", at=at, from_state="open", to_state="half_open", cause="cool-down over",
                         actor="celery@worker-2 pid 4021"),
            CircuitEvent(circuit="payment-gateway", at=at + timedelta(seconds=2), from_state="half_open", to_state="open",
                         cause="trial call failed", actor="celery@worker-2 pid 4021", consecutive_failures=1,
                         error_type="requests.exceptions.ConnectionError", error="Connection refused"),
        ]
    CircuitEvent.objects.bulk_create(pay_events + crm_events)
    error = traceback_of(TASKS[0], "connection")[1]
    Circuit.objects.bulk_create([
        Circuit(name="payment-gateway", state="open", changed_at=opened + timedelta(seconds=722), opened_at=opened + timedelta(seconds=722),
                consecutive_failures=1, open_count=len([e for e in pay_events if e.to_state == "open"]),
                window=[[int(now_epoch) - 60 * n, 40, 40 if n < 15 else 20] for n in range(10)],
                last_error_type="requests.exceptions.ConnectionError", last_error=error, last_failure_at=moment(30),
                last_success_at=moment(OUTAGE_SECONDS[0]), policy={"fail_max": 5, "reset_timeout": 240, "window": 60},
                updated_at=moment(30)),
        Circuit(name="crm-api", state="closed", changed_at=moment(SPAN - 22.7 * DAY - 7200), consecutive_failures=0,
                open_count=len([e for e in crm_events if e.to_state == "open"]), window=[[int(now_epoch) - 60, 31, 0]],
                last_error_type="requests.exceptions.ReadTimeout", last_error="Read timed out. (read timeout=10)",
                last_failure_at=moment(3 * 3600), last_success_at=moment(2), policy={"fail_max": 5, "reset_timeout": 60},
                updated_at=moment(2)),
        Circuit(name="smtp-relay", state="closed", changed_at=moment(SPAN), consecutive_failures=0, open_count=0,
                window=[[int(now_epoch) - 60, 19, 0]], last_success_at=moment(5), policy={"fail_max": 10}, updated_at=moment(5)),
    ])

    # Recorder processes: workers 1–5 live (a main process and 2 pool children each), worker-6
    # silent since it vanished, two web processes and beat.
    processes = []
    fields = {field.name for field in RecorderProcess._meta.get_fields()}
    for worker in range(1, 7):
        gone = worker == 6
        last = moment(VANISHED_SECONDS + 5 if gone else rng.uniform(0.2, 2.0))
        queues = [q for q in QUEUES if worker in WORKER_SLOTS[q]]
        for pid in (4000 + worker * 10, 4000 + worker * 10 + 1, 4000 + worker * 10 + 2):
            process = RecorderProcess(
                hostname=f"worker-{worker}", pid=pid, process_started_at=moment(9 * DAY + worker * 3600),
                program=f"celery -A shop worker -Q {','.join(queues)} -c 2",
                events_recorded=rng.randint(2_000_000, 4_000_000), events_dropped_overflow=rng.choice([0, 0, 0, 120]),
                write_errors=rng.choice([0, 0, 2]), last_flush_at=last)
            if "node" in fields:  # the worker's node name and queues (pool processes inherit them)
                process.node, process.queues = f"celery@worker-{worker}", queues
            processes.append(process)
    # A worker that shut down cleanly yesterday.
    stopped = RecorderProcess(hostname="worker-7", pid=4070, process_started_at=moment(5 * DAY), program="celery -A shop worker -Q reports -c 2",
                              events_recorded=81_000, last_flush_at=moment(DAY))
    if "node" in fields:
        stopped.node, stopped.queues, stopped.stopped_at = "celery@worker-7", ["reports"], moment(DAY)
    processes.append(stopped)
    for pid in (2101, 2102):
        processes.append(RecorderProcess(hostname="web-1", pid=pid, process_started_at=moment(3 * DAY), program="gunicorn shop.wsgi",
                                         events_recorded=rng.randint(500_000, 900_000), last_flush_at=moment(rng.uniform(0.5, 3))))
    processes.append(RecorderProcess(hostname="beat-1", pid=77, process_started_at=moment(20 * DAY), program="celery -A shop beat",
                                     events_recorded=9000, last_flush_at=moment(40)))
    processes.append(RecorderProcess(hostname="web-2", pid=2201, process_started_at=moment(12 * DAY), program="gunicorn shop.wsgi",
                                     events_recorded=120_000, events_dropped_error=310, write_errors=7,
                                     last_error="OperationalError: connection to server at 10.0.0.5 failed", last_flush_at=moment(4 * DAY)))
    RecorderProcess.objects.bulk_create(processes)
    MonitorHeartbeat.objects.bulk_create([
        MonitorHeartbeat(task=task, first_run_at=moment(20 * DAY), last_run_at=moment(rng.uniform(1, 8)),
                         last_duration=duration, runs=runs)
        for task, duration, runs in (("jobwatch.sample_queues", 0.04, 115_000), ("jobwatch.run_detectors", 0.39, 57_000),
                                     ("jobwatch.send_alerts", 0.02, 172_000))
    ])

    # Findings: ~300 resolved over the month, and what is wrong now.
    findings = []
    kinds = finding_kinds()
    for _ in range(300):
        kind = rng.choice(kinds)
        ago = rng.uniform(3 * 3600, SPAN - 3600)
        lasted = rng.uniform(60, 5400)
        findings.append(make_finding(kind, moment(ago), moment(ago - lasted), ids_near(ago), rng, resolved=True))
    now_wrong = [
        ("circuits", "circuit_open", "payment-gateway", "critical"), ("backlog", "failure_rate", "shop.charge_payment", "critical"),
        ("backlog", "queue_growing", "crm", "warning"), ("backlog", "queue_too_long", "crm", "warning"),
        ("backlog", "queue_oldest_age", "crm", "critical"), ("backlog", "stuck_jobs", "webhooks.deliver_event", "critical"),
        ("orphans", "orphaned_jobs", "shop.send_receipt:deleted_after_enqueue", "warning"),
        ("orphans", "enqueue_in_transaction", "shop.Order:shop.signals.order_saved", "warning"),
        ("fanout", "fanout_storm", "shop.Product:search.signals.product_saved", "warning"),
        ("fanout", "duplicate_enqueues", "shop.update_search_index", "warning"),
    ]
    for detector, kind, subject, severity in now_wrong:
        since = {"circuit_open": CIRCUIT_OPEN_SECONDS, "queue_growing": 600, "stuck_jobs": 1800}.get(kind, 1200)
        ids = failed_ids("shop.charge_payment", "waiting") if kind == "circuit_open" else (
            failed_ids("shop.send_receipt") if kind == "orphaned_jobs" else ids_near(60))
        findings.append(make_finding((detector, kind, subject, severity), moment(since), moment(15), ids, rng, resolved=False))
    Finding.objects.bulk_create(findings)

    channels = NotificationChannel.objects.bulk_create([
        NotificationChannel(name="ops-email", kind="email", target="ops@shop.example", min_severity="warning",
                            last_success_at=moment(900)),
        NotificationChannel(name="ops-slack", kind="slack", target="https://hooks.slack.example/services/T0/B0/x",
                            min_severity="critical", last_success_at=moment(300)),
        NotificationChannel(name="pager-webhook", kind="webhook", target="https://pager.example/hook", enabled=False,
                            consecutive_failures=10, last_error="HTTP 410 Gone", last_failure_at=moment(2 * DAY),
                            disabled_reason="10 failures in a row (HTTP 410 Gone)"),
    ])
    incidents, notifications = [], []
    for finding in Finding.objects.order_by("first_seen"):
        open_now = finding.status == "open"
        dismissed = not open_now and (finding.last_seen - finding.first_seen).total_seconds() < 120
        state = "open" if open_now else ("dismissed" if dismissed else "resolved")
        incident = Incident(fingerprint=finding.fingerprint, finding=finding, kind=finding.kind, subject=finding.subject,
                            severity=finding.severity, title=finding.title, state=state, opened_at=finding.first_seen,
                            notified_at=None if dismissed else finding.first_seen + timedelta(seconds=15),
                            last_notified_at=None if dismissed else finding.first_seen + timedelta(seconds=15),
                            resolved_at=finding.resolved_at, acknowledged_at=finding.first_seen + timedelta(minutes=3) if rng.random() < 0.3 else None,
                            acknowledged_by="alice" if rng.random() < 0.5 else "bob")
        incidents.append(incident)
    Incident.objects.bulk_create(incidents)
    for incident in incidents:
        if incident.state == "dismissed":
            continue
        for channel in channels[:2]:
            events = [("opened", incident.opened_at + timedelta(seconds=15))]
            if incident.resolved_at:
                events.append(("resolved", incident.resolved_at + timedelta(seconds=60)))
            for event, at in events:
                notifications.append(Notification(incident=incident, channel=channel, event=event, status="sent", attempts=1,
                                                  created_at=at, sent_at=at + timedelta(seconds=1),
                                                  payload={"title": incident.title, "severity": incident.severity}))
    Notification.objects.bulk_create(notifications, batch_size=2000)

    # The audit log and the archive: replays, discards, purges (their messages archived), restores,
    # forced circuits and acknowledgements by a few operators over the month.
    actions, messages = [], []
    users = ["alice", "bob", "carol", "dmitri", "ops-bot"]
    for _ in range(3000):
        at = moment(rng.uniform(60, SPAN))
        action = rng.choices(["replay_jobs", "acknowledge_incident", "discard_jobs", "purge_messages", "restore_messages",
                              "force_circuit"], [40, 20, 12, 10, 5, 5])[0]
        dry_run = action in ("replay_jobs", "purge_messages", "discard_jobs") and rng.random() < 0.3
        outcome = "previewed" if dry_run else rng.choices(["succeeded", "failed", "refused"], [92, 4, 4])[0]
        task = rng.choice(TASKS)
        matched = rng.choice([1, 1, 3, 12, 40, 250, 1800])
        target, parameters = {
            "replay_jobs": (f"state=failed, task={task.name}", {"selection": {"filter": {"state": "failed", "task": task.name}},
                                                                "force": False, "request_key": uuid.UUID(int=rng.getrandbits(128)).hex}),
            "acknowledge_incident": (f"incident {rng.randint(1, 300)}", {"incident": rng.randint(1, 300), "snooze_seconds": None}),
            "discard_jobs": (f"{matched} jobs", {"selection": {"ids": [task_id_of(rng.randint(1, max_id)) for _ in range(min(matched, 5))],
                                                               "count": matched}, "undo": False}),
            "purge_messages": (f"queue {task.queue}", {"queue": task.queue, "messages": {"task": task.name}}),
            "restore_messages": (f"{matched} archived messages", {"archived_ids": [rng.randint(1, 4000) for _ in range(min(matched, 5))]}),
            "force_circuit": ("payment-gateway", {"change": rng.choice(["open", "close", "reset"]), "reason": "gateway maintenance"}),
        }[action]
        log_entry = ActionLog(at=at, finished_at=at + timedelta(seconds=rng.uniform(0.05, 40)), username=rng.choice(users),
                              surface=rng.choices(["dashboard", "command", "api", "admin"], [70, 15, 10, 5])[0], action=action,
                              target=target, parameters=parameters, dry_run=dry_run, outcome=outcome, matched=matched,
                              succeeded=0 if outcome in ("previewed", "refused") else matched,
                              error="HTTPError: 403 lacks the permission" if outcome == "refused" else "")
        actions.append(log_entry)
    ActionLog.objects.bulk_create(actions, batch_size=1000)
    purges = [entry for entry in actions if entry.action == "purge_messages" and entry.outcome == "succeeded"]
    for entry in purges:
        task = next(t for t in TASKS if t.name == entry.parameters["messages"]["task"])
        for n in range(4000 // max(len(purges), 1)):
            task_id = str(uuid.UUID(int=rng.getrandbits(128)))
            raw = broker_message(task, task_id, [100000 + rng.randint(0, 3_000_000)])
            restored = rng.random() < 0.1
            messages.append(ArchivedMessage(action=entry, archived_at=entry.at + timedelta(milliseconds=n), broker="redis",
                                            queue=task.queue, priority=0, task_id=task_id, task_name=task.name, raw=raw,
                                            size=len(raw), removed_at=entry.at + timedelta(milliseconds=n + 5),
                                            restored_at=entry.at + timedelta(hours=1) if restored else None))
    ArchivedMessage.objects.bulk_create(messages, batch_size=1000)


def outage_events(circuit, start, minutes, error_type):
    from monitors.models import CircuitEvent

    end = start + timedelta(minutes=minutes)
    events = [CircuitEvent(circuit=circuit, at=start + timedelta(seconds=40), from_state="closed", to_state="open",
                           cause="5 consecutive failures", actor="celery@worker-1 pid 4011", consecutive_failures=5,
                           window_calls=120, window_failures=70, error_type=error_type, error="Connection refused")]
    at = start + timedelta(seconds=100)
    while at < end:
        events.append(CircuitEvent(circuit=circuit, at=at, from_state="open", to_state="half_open", cause="cool-down over",
                                   actor="celery@worker-2 pid 4021"))
        events.append(CircuitEvent(circuit=circuit, at=at + timedelta(seconds=1), from_state="half_open", to_state="open",
                                   cause="trial call failed", actor="celery@worker-2 pid 4021", error_type=error_type))
        at += timedelta(minutes=10)
    events.append(CircuitEvent(circuit=circuit, at=end, from_state="half_open", to_state="closed", cause="3 trial calls succeeded",
                               actor="celery@worker-2 pid 4021"))
    return events


def finding_kinds():
    return [
        ("fanout", "fanout_storm", "shop.Product:search.signals.product_saved", "warning"),
        ("fanout", "duplicate_enqueues", "shop.update_search_index", "warning"),
        ("fanout", "bulk_loop", "shop.Product:POST /admin/shop/product/import/", "warning"),
        ("fanout", "trivial_save_enqueues", "accounts.User:accounts.signals.user_saved", "warning"),
        ("orphans", "orphaned_jobs", "shop.send_receipt:deleted_after_enqueue", "warning"),
        ("orphans", "orphaned_jobs", "shop.charge_payment:ran_before_commit", "warning"),
        ("orphans", "enqueue_in_transaction", "shop.Order:shop.signals.order_saved", "warning"),
        ("circuits", "circuit_open", "payment-gateway", "critical"),
        ("circuits", "circuit_open", "crm-api", "warning"),
        ("circuits", "circuit_flapping", "payment-gateway", "warning"),
        ("services", "service_failing", "hooks.partner.example:443", "warning"),
        ("backlog", "queue_too_long", "crm", "warning"),
        ("backlog", "queue_growing", "reports", "warning"),
        ("backlog", "queue_oldest_age", "emails", "warning"),
        ("backlog", "queue_without_consumer", "reports", "critical"),
        ("backlog", "stuck_jobs", "reports.daily_sales", "warning"),
        ("backlog", "failure_rate", "webhooks.deliver_event", "warning"),
        ("backlog", "failure_rate", "shop.charge_payment", "critical"),
    ]


def make_finding(kind, first_seen, last_seen, job_ids, rng, resolved):
    """A finding with evidence in the shape its detector writes (monitors/detectors/*.py)."""
    from monitors.models import Finding

    detector, kind_name, subject, severity = kind
    count = rng.randint(5, 3000)
    left, _, right = subject.partition(":")
    evidence = {
        "fanout_storm": lambda: {"enqueues_per_minute": 640.0, "baseline_per_minute": 70.2, "enqueues": count, "saves": count - 3,
                                 "enqueues_per_save": 1.0, "receiver": right, "model": left, "window_seconds": 300,
                                 "sample_job_ids": job_ids[:10]},
        "duplicate_enqueues": lambda: {"distinct_calls": 40, "enqueues": count + 40, "needless_enqueues": count, "ran_needlessly": count // 2,
                                       "worst_copies": 9, "example_args": [100231], "example_kwargs": {},
                                       "origin_receiver": "search.signals.product_saved", "sample_job_ids": job_ids[:10]},
        "bulk_loop": lambda: {"transactions": 2, "largest_saves": 480, "largest_jobs": 960, "jobs_per_save": 2.0,
                              "receivers": ["search.signals.product_saved", "shop.signals.product_priced"], "model": left,
                              "caller": right, "transaction_ids": [uuid.UUID(int=rng.getrandbits(128)).hex for _ in range(2)]},
        "trivial_save_enqueues": lambda: {"jobs": count, "share_of_receiver_jobs": 0.41, "fields": ["last_seen_at"],
                                          "receiver": right, "model": left, "sample_job_ids": job_ids[:10]},
        "orphaned_jobs": lambda: {"cause": right, "jobs": count, "where": {"failed": count}, "missing_records": {"shop.Order": [100000 + n for n in range(10)]},
                                  "enqueued_by": {"shop.signals.order_paid": count}, "job_ids": job_ids},
        "enqueue_in_transaction": lambda: {"jobs": count, "receiver": right, "task": "shop.charge_payment", "model": left},
        "circuit_open": lambda: {"state": "open", "open_since": first_seen.isoformat(), "open_seconds": 900.0,
                                 "cool_down_left_seconds": 120.0, "opened_by": "requests.exceptions.ConnectionError",
                                 "last_error": "Connection refused", "consecutive_failures": 5, "times_opened": 7, "forced_by": "",
                                 "jobs_waiting": count, "oldest_waiting_since": first_seen.isoformat(),
                                 "waiting_by_queue": {"payments": count}, "jobs_retrying": 12, "state_read_from": "database"},
        "circuit_flapping": lambda: {"openings": [(first_seen + timedelta(minutes=9 * n)).isoformat() for n in range(4)]},
        "service_failing": lambda: {"target": "hooks.partner.example:443", "jobs": count, "share_of_jobs": 0.92,
                                    "statuses": {}, "kind": "connection",
                                    "exception_types": {"requests.exceptions.ConnectionError": count},
                                    "outcomes": {"failed": count}, "tasks": {"webhooks.deliver_event": count},
                                    "queues": {"webhooks": count}, "example_error": "Connection refused",
                                    "first_failure": first_seen.isoformat(), "last_failure": last_seen.isoformat(),
                                    "window_seconds": 600, "sample_job_ids": job_ids[:10]},
        "stuck_jobs": lambda: {"jobs": 40, "workers_gone": ["celery@worker-6"], "workers_known": True,
                               "oldest_started_at": first_seen.isoformat(), "job_ids": job_ids},
        "failure_rate": lambda: {"failed": count, "finished": count * 3, "rate": 0.3333,
                                 "errors": {"requests.exceptions.ConnectionError": count}},
    }.get(kind_name, lambda: {"queue": subject, "depth": count, "in_flight": 6, "consumers": 1, "oldest_age_seconds": 1180.0,
                              "arrivals_per_minute": 31.0, "drains_per_minute": 4.7, "time_to_drain_seconds": None,
                              "sampled_at": last_seen.isoformat(), "smallest_depth_in_period": count // 2})()
    title = f"{kind_name.replace('_', ' ').capitalize()}: {subject} ({count})"
    return Finding(fingerprint=f"{kind_name}:{subject}"[:400], detector=detector, kind=kind_name, subject=subject,
                   severity=severity, status="resolved" if resolved else "open", title=title,
                   explanation="Generated by benchmarks/dashboard.py: the likely cause and the usual fix would be here.",
                   evidence=evidence, count=count, first_seen=first_seen, last_seen=last_seen,
                   resolved_at=last_seen + timedelta(seconds=30) if resolved else None)


def broker_message(task, task_id, args):
    """A Celery protocol-2 message as kombu's Redis transport stores it."""
    import base64

    body = base64.b64encode(json.dumps([args, json.loads(task.kwargs), {"callbacks": None, "errbacks": None, "chain": None,
                                                                        "chord": None}]).encode()).decode()
    return json.dumps({
        "body": body, "content-encoding": "utf-8", "content-type": "application/json",
        "headers": {"lang": "py", "task": task.name, "id": task_id, "shadow": None, "eta": None, "expires": None,
                    "group": None, "group_index": None, "retries": 0, "timelimit": [None, None], "root_id": task_id,
                    "parent_id": None, "argsrepr": repr(tuple(args)), "kwargsrepr": task.kwargs, "origin": "gen2101@web-1",
                    "ignore_result": True},
        "properties": {"correlation_id": task_id, "reply_to": "7c1bd8a2-5f0e-3b5e-9a43-2d6f0f4c1e55", "delivery_mode": 2,
                       "delivery_info": {"exchange": "", "routing_key": task.queue}, "priority": 0, "body_encoding": "base64",
                       "delivery_tag": str(uuid.uuid4())},
    })


def redis_reachable():
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
        return True
    except redis.RedisError as error:
        log(f"WARNING: no Redis at {REDIS_URL} ({error}): the queue pages will say the broker is unavailable")
        return False


def fill_broker(name):
    """Redis db 6 holds the queues' waiting messages (the jobs recorded as enqueued), so that a
    queue's page peeks a real queue (the broker is the site's CELERY_BROKER_URL, set to it)."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    tasks = {task.name: task for task in TASKS}
    with connect(name) as connection:
        rows = connection.execute("SELECT task_id, task_name, args FROM monitors_jobexecution WHERE state = 'enqueued' "
                                  "ORDER BY id").fetchall()
    pipe = client.pipeline(transaction=False)
    for task_id, task_name, args in rows:
        task = tasks[task_name]
        pipe.lpush(task.queue, broker_message(task, task_id, args))
    pipe.execute()
