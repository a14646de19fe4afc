"""Purge, restore and replay of 100,000 jobs: throughput and peak memory, beside the floor.

    .venv/bin/python benchmarks/actions.py [--jobs 100000]

In one run, each operation in a fresh process (so its peak memory is its own):
- purge: 100,000 messages of one task out of a Redis queue of 200,000 (the other task's stay),
  each archived in PostgreSQL before it is removed; against `celery purge` of a queue of the
  same 100,000 messages (it deletes everything and keeps nothing: the floor);
- restore: the 100,000 archived messages back onto the queue;
- replay: 100,000 recorded failed jobs, judged (arguments, references) and re-enqueued under new
  ids, with the recorder on as in production; against `send_task` of the same 100,000 jobs in a
  loop (the floor of publishing them).
Targets: purge and restore ≥ 1,000 messages/s, replay at least 0.8 of the bare send_task loop
(publishing is the limit: the recorder is on in both), each within 300 MB peak.

Uses the database jobwatch_bench_actions (dropped and recreated) and Redis db 5. Ends with one
line of JSON.
"""

import argparse
import json
import multiprocessing
import os
import platform
import resource
import sys
import time
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from benchmarks.databases import recreate_database  # noqa: E402

DATABASE = "jobwatch_bench_actions"
REDIS_URL = "redis://127.0.0.1:6379/5"
os.environ["DATABASE_URL"] = f"postgresql://postgres@127.0.0.1:5432/{DATABASE}"
os.environ["CELERY_BROKER_URL"] = REDIS_URL
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")
# As in production: with DEBUG on, Django keeps every query (and its parameters) in memory.
os.environ["DEBUG"] = "0"
os.environ.setdefault("SECRET_KEY", "benchmark-only")
QUEUE, OTHER_QUEUE = "bench-purge", "bench-floor"
PURGED, KEPT = "shop.tasks.purged", "shop.tasks.kept"
TARGETS = {"purge_per_s": 1000, "restore_per_s": 1000, "replay_of_send_floor": 0.8, "peak_mb": 300}


def setup_django():
    import django

    django.setup()


def fill(queue, count, task_names):
    """`count` distinct real Celery messages, the task names taking turns; pushed in pipelines."""
    import uuid

    import redis

    from dashboard.celery import app

    client = redis.Redis.from_url(REDIS_URL)
    client.delete(queue)
    templates = []
    for name in task_names:
        task_id = str(uuid.uuid4())
        app.send_task(name, args=[12345], kwargs={"note": "x" * 100}, queue=queue, task_id=task_id)
        templates.append((client.rpop(queue).decode(), task_id))
    for start in range(0, count, 10_000):
        entries = [templates[n % len(templates)][0].replace(templates[n % len(templates)][1], str(uuid.uuid4()))
                   for n in range(start, min(start + 10_000, count))]
        client.lpush(queue, *entries)


def operator():
    from django.contrib.auth.models import Permission, User

    user, _ = User.objects.get_or_create(username="bench", defaults={"is_staff": True})
    user.user_permissions.set(Permission.objects.filter(codename__in=["purge_messages", "restore_messages", "replay_jobs"]))
    return User.objects.get(pk=user.pk)


def in_child(name, results):
    """Run one measured operation in this (fresh) process; report seconds, items, peak RSS."""
    setup_django()
    started = time.perf_counter()
    items = OPERATIONS[name]()
    elapsed = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    results.put({"name": name, "seconds": elapsed, "items": items, "peak_mb": peak_mb})


def purge():
    from monitors.actions import purge_messages
    from monitors.actions.purge import MessageSelection

    result = purge_messages(operator(), QUEUE, MessageSelection(task=PURGED), surface="command", allow_large=True,
                            run_here=True)
    assert result.log.failed == 0, result.log.error
    return result.log.succeeded


def celery_purge():
    from dashboard.celery import app

    with app.connection_for_write() as connection:
        return connection.default_channel.queue_purge(OTHER_QUEUE)


def restore():
    from monitors.actions import restore_messages
    from monitors.models import ArchivedMessage

    ids = list(ArchivedMessage.objects.values_list("pk", flat=True))
    result = restore_messages(operator(), ids, surface="command")
    return result.log.succeeded


def replay():
    from monitors.actions import replay_jobs
    from monitors.actions.selection import JobSelection

    result = replay_jobs(operator(), JobSelection.from_filter({"task": "shop.tasks.replayed", "state": "failed"}),
                         surface="command", allow_large=True, run_here=True)
    assert result.log.failed == 0, result.log.parameters.get("refused")
    return result.log.succeeded


def send_floor():
    from dashboard.celery import app
    from monitors.models import JobExecution

    rows = JobExecution.objects.filter(task_name="shop.tasks.replayed").values_list("args", "kwargs", "queue").iterator(chunk_size=2000)
    sent = 0
    with app.producer_or_acquire() as producer:
        for args, kwargs, queue in rows:  # the queue the replay uses too
            app.send_task("shop.tasks.replayed", args=args, kwargs=kwargs, queue=queue, producer=producer)
            sent += 1
    return sent


OPERATIONS = {"purge": purge, "celery_purge": celery_purge, "restore": restore, "replay": replay, "send_floor": send_floor}


def measure(name):
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    child = context.Process(target=in_child, args=(name, results))
    child.start()
    outcome = results.get(timeout=3600)
    child.join()
    outcome["per_s"] = outcome["items"] / outcome["seconds"] if outcome["seconds"] else None
    print(f"  {name:<13} {outcome['items']:>8} in {outcome['seconds']:7.1f} s = {outcome['per_s']:8.0f}/s, "
          f"peak {outcome['peak_mb']:.0f} MB", flush=True)
    return outcome


def recorded_failures(count):
    """`count` failed jobs in the execution table, as the recorder writes them."""
    import uuid

    from django.utils import timezone

    from monitors.models import JobExecution

    now = timezone.now()
    for start in range(0, count, 5000):
        JobExecution.objects.bulk_create([
            JobExecution(task_id=str(uuid.uuid4()), task_name="shop.tasks.replayed", state="failed", queue=OTHER_QUEUE,
                         args=[n], kwargs={"note": "x" * 100}, payload_complete=True, enqueued_at=now, updated_at=now,
                         exception_type="ConnectionError", exception_message="down")
            for n in range(start, min(start + 5000, count))
        ])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    options = parser.parse_args()
    count = options.jobs

    recreate_database(DATABASE)
    setup_django()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()
    print(f"Filling: {2 * count} messages (half of them purged), {count} for the floor, {count} failed jobs…", flush=True)
    fill(QUEUE, 2 * count, [PURGED, KEPT])
    fill(OTHER_QUEUE, count, [PURGED])
    recorded_failures(count)

    figures = {}
    figures["celery_purge"] = measure("celery_purge")
    figures["purge"] = measure("purge")
    client = redis.Redis.from_url(REDIS_URL)
    assert client.llen(QUEUE) == count, "the other task's messages must all stay"
    figures["restore"] = measure("restore")
    assert client.llen(QUEUE) == 2 * count
    figures["send_floor"] = measure("send_floor")
    client.delete(OTHER_QUEUE)
    figures["replay"] = measure("replay")
    assert client.llen(OTHER_QUEUE) == count

    ratios = {
        "purge_of_celery_purge": round(figures["purge"]["per_s"] / figures["celery_purge"]["per_s"], 4),
        "replay_of_send_floor": round(figures["replay"]["per_s"] / figures["send_floor"]["per_s"], 3),
    }
    print(f"purge (archive first) runs at {ratios['purge_of_celery_purge']:.4f} of `celery purge` (which keeps nothing); "
          f"replay at {ratios['replay_of_send_floor']:.2f} of bare send_task")
    met = {
        "purge_per_s": figures["purge"]["per_s"] >= TARGETS["purge_per_s"],
        "restore_per_s": figures["restore"]["per_s"] >= TARGETS["restore_per_s"],
        "replay_of_send_floor": ratios["replay_of_send_floor"] >= TARGETS["replay_of_send_floor"],
        "peak_mb": max(figures[name]["peak_mb"] for name in ("purge", "restore", "replay")) <= TARGETS["peak_mb"],
    }
    rounded = {name: {key: round(value, 1) if isinstance(value, float) else value for key, value in outcome.items()}
               for name, outcome in figures.items()}
    print(json.dumps({"benchmark": "actions", "date": date.today().isoformat(),
                      "machine": f"{platform.machine()} {os.cpu_count()} cpu", "jobs": count, "figures": rounded,
                      "ratios": ratios, "targets": TARGETS, "met": met}))


if __name__ == "__main__":
    main()
