"""The detectors on a large history: 10,000,000 JobExecution rows on PostgreSQL.

    .venv/bin/python benchmarks/detectors.py [--rows 10000000] [--queued 100000] [--keep]
    JOBWATCH_PARTITION_HISTORY=1 .venv/bin/python benchmarks/detectors.py   # on the day-partitioned history

Fills a dedicated database (jobwatch_bench_detectors) with a month of recorded jobs through COPY
(indexes built afterwards, as a restore would), two days of queue samples, and a Redis queue of
`--queued` messages that reference demo orders, a tenth of them missing. Then times one full
detector pass and each detector alone (median of 3), the orphan check over the queued messages,
and the same detectors over a history 100x smaller as the baseline: the cost should follow the
window (the last hour), not the history. Prints the query plans of the windowed queries and fails
the "uses indexes" check if any of them scans the whole table.
Targets: each detector under 1 s on the last hour of data, the orphan check under 10 s.
Ends with one line of JSON.
"""

import argparse
import json
import os
import platform
import random
import re
import statistics
import sys
import time
import uuid
from datetime import date, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from benchmarks.databases import recreate_database  # noqa: E402

DATABASE = "jobwatch_bench_detectors"
REDIS_URL = "redis://127.0.0.1:6379/2"
os.environ["DATABASE_URL"] = f"postgresql://postgres@127.0.0.1:5432/{DATABASE}"
os.environ["CELERY_BROKER_URL"] = REDIS_URL
os.environ["JOBWATCH_RECORDER_ENABLED"] = "0"
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")
TARGETS = {"detector_s": 1.0, "orphan_check_s": 10.0}
HISTORY_DAYS = 30
TASKS = [f"shop.tasks.task_{n}" for n in range(40)] + ["demo.tasks.reserve_inventory", "demo.tasks.send_order_confirmation"]
QUEUES = ["celery", "emails", "payments", "reports", "search", "exports", "webhooks", "sync", "low", "high"]
RECEIVERS = [(f"shop.{model}", f"shop.receivers.on_{model.lower()}_{n}") for model in ("Order", "Customer", "Invoice") for n in range(8)]


def setup_django():
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def copy_jobs(count, recent, now, seed=7):
    """COPY `count` rows in chunks (`recent` of them in the last hour, the rest spread over a
    month), with the table's indexes dropped first and rebuilt afterwards."""
    from django.db import connection

    from monitors.models import JobExecution

    rng = random.Random(seed)
    table = JobExecution._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s AND indexname NOT LIKE '%%pkey' AND indexdef NOT LIKE '%%UNIQUE%%'", [table])
        indexes = cursor.fetchall()
        for name, _ in indexes:
            cursor.execute(f'DROP INDEX "{name}"')
    # Every column, so NOT NULL text columns get "" as the recorder would write them.
    fields = [field for field in JobExecution._meta.concrete_fields if field.name != "id"]
    columns = [field.column for field in fields]
    blank = {field.column: ("" if field.get_internal_type() in ("CharField", "TextField") else None) for field in fields}
    history = HISTORY_DAYS * 86400
    started = time.perf_counter()
    connection.ensure_connection()
    raw = connection.connection  # psycopg's own connection, for COPY
    chunk = 200_000
    for start in range(0, count, chunk):
        with raw.cursor().copy(f"COPY {table} ({', '.join(connection.ops.quote_name(c) for c in columns)}) FROM STDIN") as copy:
            for n in range(start, min(start + chunk, count)):
                age = rng.random() * 3600 if n < recent else 3600 + rng.random() * (history - 3600)
                enqueued = now - timedelta(seconds=age)
                model, receiver = RECEIVERS[n % len(RECEIVERS)]
                failed, waiting, atomic = n % 97 == 0, n < 200, n % 5 == 0
                row = dict(blank)
                row.update(
                    task_id=uuid.UUID(int=rng.getrandbits(128)).hex, task_name=TASKS[n % len(TASKS)],
                    state="failed" if failed else ("enqueued" if waiting else "succeeded"), progress=3,
                    queue=QUEUES[n % len(QUEUES)], routing_key=QUEUES[n % len(QUEUES)], args=f"[{n % 50000}]",
                    kwargs="{}", payload_hash=f"{rng.getrandbits(64):016x}", retries=0, circuit_waits=0, enqueued_at=enqueued,
                    started_at=None if waiting else enqueued + timedelta(seconds=1),
                    finished_at=None if waiting else enqueued + timedelta(seconds=1.5),
                    runtime=None if waiting else 0.5, worker="worker@host",
                    exception_type="shop.models.Order.DoesNotExist" if failed else "",
                    origin_kind="save", origin_model=model, origin_pk=str(n % 50000), origin_save=f"{n // 3:032x}",
                    origin_receiver=receiver, origin_in_atomic=atomic,
                    origin_deferred="" if atomic and n % 10 else "on_commit",
                    origin_transaction=f"{n // 20:032x}" if atomic else "",
                    references=json.dumps([{"arg": "order_id", "model": "demo.Order", "pk": n % 50000}]) if failed or waiting else None,
                    updated_at=enqueued,
                )
                if n % 101 == 1 and not waiting:  # a partner API refusing calls: jobs retrying against it
                    row.update(state="retried", retries=1, exception_type="requests.exceptions.ConnectionError",
                               exception_message="Connection refused", error_target=f"api-{n % 3}.partner.example:443",
                               error_kind="connection", error_progress=7)
                copy.write_row(tuple(row[column] for column in columns))
        raw.commit()
        print(f"  {min(start + chunk, count):>12,} rows", end="\r", flush=True)
    loaded = time.perf_counter() - started
    started = time.perf_counter()
    with connection.cursor() as cursor:
        for _, definition in indexes:
            # A partitioned table's index reads "ON ONLY" in pg_indexes: as such it would be made
            # for the parent alone (and left invalid); without it, for every day partition too.
            cursor.execute(definition.replace(" ON ONLY ", " ON ", 1))
        cursor.execute(f"ANALYZE {table}")
    return loaded, time.perf_counter() - started


def fill_samples(now):
    from monitors.models import QueueSample

    samples = [
        QueueSample(queue=queue, sampled_at=now - timedelta(seconds=15 * n), depth=40 + n % 7, consumers=2,
                    workers=["worker@host"], oldest_age=20.0, arrivals_per_minute=100, drains_per_minute=100)
        for queue in QUEUES for n in range(2 * 86400 // 15)
    ]
    QueueSample.objects.bulk_create(samples, batch_size=5000)
    return len(samples)


def fill_orders():
    """demo orders 1..49,999, every tenth missing: what the recorded and queued jobs reference."""
    from demo.models import Customer, Order

    customer = Customer.objects.create(name="bench", email="bench@example.com")
    Order.objects.bulk_create(
        [Order(pk=pk, customer=customer, total_cents=1) for pk in range(1, 50_000) if pk % 10], batch_size=5000
    )


def fill_queue(queued):
    """`queued` messages in Redis that reference the orders (reserve_inventory(order_id), as the
    demo shop enqueues it)."""
    import base64

    import redis
    from celery import Celery

    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    app = Celery("bench", broker=REDIS_URL, set_as_current=False)
    app.send_task("demo.tasks.reserve_inventory", args=[1], queue="celery")
    template = json.loads(client.rpop("celery"))
    embed = json.loads(base64.b64decode(template["body"]))[2]
    for start in range(0, queued, 10_000):
        batch = []
        for n in range(start, min(start + 10_000, queued)):
            message = dict(template, headers=dict(template["headers"], id=str(uuid.uuid4())))
            message["body"] = base64.b64encode(json.dumps([[n % 49_999 + 1], {}, embed]).encode()).decode()
            batch.append(json.dumps(message))
        client.lpush("celery", *batch)
    return client.llen("celery")


def timed(function, repeat=3):
    seconds = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds)


def scans_history(plan):
    """(whole history scanned?, day partitions read in full) of an EXPLAIN. On the plain table
    any sequential scan reads the whole history. On day partitions, one of an empty partition
    (a day ahead, the catch-all) costs nothing, and one of the one or two days an hour's window
    falls in is a planner's fair choice when much of the day matches; more than two is the
    history again."""
    scanned = re.findall(r"Seq Scan on (monitors_jobexecution\w*) \S+\s+\(cost=[\d.]+\.\.([\d.]+)", plan)
    plain = any(table == "monitors_jobexecution" for table, _ in scanned) or " Seq Scan on monitors_jobexecution " in plan
    days = sorted({table for table, cost in scanned if table != "monitors_jobexecution" and float(cost) > 0})
    return plain or len(days) > 2, ", ".join(days)


def plans():
    """EXPLAIN of the windowed queries; True when none of them scans the whole table."""
    from django.db import connection
    from django.db.models import Count, Q
    from django.utils import timezone

    from monitors.detectors.services import failed_calls
    from monitors.models import JobExecution

    now = timezone.now()
    hour = now - timedelta(hours=1)
    queries = {
        "fan-out by origin": JobExecution.objects.filter(enqueued_at__gt=hour).values("origin_model", "origin_receiver").annotate(n=Count("id")),
        "duplicates": JobExecution.objects.filter(enqueued_at__gt=now - timedelta(minutes=5)).values("task_name", "payload_hash").annotate(n=Count("id")),
        "failure rate": JobExecution.objects.filter(finished_at__gt=now - timedelta(minutes=10)).values("task_name").annotate(f=Count("id", filter=Q(state="failed"))),
        "failed DoesNotExist": JobExecution.objects.filter(finished_at__gt=hour, state="failed", exception_type__endswith=".DoesNotExist"),
        "services failing": failed_calls(now - timedelta(minutes=10), now),
        "waiting jobs": JobExecution.objects.filter(state="enqueued").order_by("enqueued_at")[:1000],
        "stuck jobs": JobExecution.objects.filter(state="started", started_at__lt=now - timedelta(minutes=30)),
    }
    report, all_indexed = {}, True
    with connection.cursor() as cursor:
        for name, queryset in queries.items():
            sql, params = queryset.query.sql_with_params()
            cursor.execute("EXPLAIN " + sql, params)
            plan = "\n".join(row[0] for row in cursor.fetchall())
            full_scan, days_scanned = scans_history(plan)
            all_indexed &= not full_scan
            report[name] = plan
            verdict = "FULL TABLE SCAN" if full_scan else "index" + (f", and a scan of the window's day ({days_scanned})" if days_scanned else "")
            print(f"\n-- {name}: {verdict}\n{plan}")
    return all_indexed, report


def measure(label):
    from monitors.detectors import DETECTORS, run_detectors

    results = {"all": timed(lambda: run_detectors())}
    for name in DETECTORS:
        results[name] = timed(lambda name=name: run_detectors([name]))
    print(f"{label}: " + ", ".join(f"{name} {seconds:.3f}s" for name, seconds in results.items()))
    return results


def build(rows, recent):
    from django.db import connection
    from django.utils import timezone

    print(f"Building {rows:,} jobs ({recent:,} in the last hour) in {DATABASE}…", flush=True)
    connection.close()
    if hasattr(connection, "close_pool"):
        connection.close_pool()  # its connections are about to be dropped with the database
    recreate_database(DATABASE)
    setup_django()
    now = timezone.now()
    from monitors import partitions  # after django.setup()

    # With JOBWATCH_PARTITION_HISTORY=1 the history is day-partitioned: each generated day in its own.
    partitions.ensure_days(connection, now - timedelta(days=HISTORY_DAYS + 1), now + timedelta(days=3))
    loaded, indexed = copy_jobs(rows, recent, now)
    print(f"  loaded in {loaded:.0f}s, indexed in {indexed:.0f}s")
    fill_samples(now)
    fill_orders()
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--recent", type=int, default=60_000, help="of them, enqueued in the last hour")
    parser.add_argument("--queued", type=int, default=100_000)
    options = parser.parse_args()
    import django

    recreate_database(DATABASE)  # so that start-up finds a database to connect to
    django.setup()

    small_rows = max(options.rows // 100, options.recent)
    build(small_rows, options.recent)
    small = measure(f"history {small_rows:,}")
    build(options.rows, options.recent)
    large = measure(f"history {options.rows:,}")
    queued = fill_queue(options.queued)
    from monitors.detectors.orphans import detect as orphan_check
    from django.utils import timezone

    orphan_seconds = timed(lambda: orphan_check(timezone.now()))
    found = orphan_check(timezone.now())
    missing_in_queue = sum(p.count for p in found if p.kind == "orphaned_jobs")
    indexed, _ = plans()

    print(f"\n{'detector':<12} {'history ' + format(small_rows, ','):>18} {'history ' + format(options.rows, ','):>20} {'ratio':>7}")
    for name in large:
        print(f"{name:<12} {small[name]:>17.3f}s {large[name]:>19.3f}s {large[name] / small[name]:>7.2f}")
    print(f"orphan check over {queued:,} queued messages: {orphan_seconds:.2f}s ({missing_in_queue:,} orphans found)")
    figures = {
        "benchmark": "detectors",
        "rows": options.rows,
        "rows_last_hour": options.recent,
        "queued_messages": queued,
        "seconds": {name: round(value, 3) for name, value in large.items()},
        "seconds_small_history": {name: round(value, 3) for name, value in small.items()},
        "ratio_large_to_small": {name: round(large[name] / small[name], 2) for name in large},
        "orphan_check_s": round(orphan_seconds, 2),
        "orphans_found": missing_in_queue,
        "plans_use_indexes": indexed,
        "targets": TARGETS,
        "met": {
            "each_detector": all(large[name] < TARGETS["detector_s"] for name in large if name != "all"),
            "orphan_check": orphan_seconds < TARGETS["orphan_check_s"],
        },
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, PostgreSQL",
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
