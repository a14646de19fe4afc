"""The recorder never hurts the user's jobs: with the database unreachable, jobs still succeed,
and afterwards the counters account for every event, written or dropped."""

import json
import os
from io import StringIO

import psycopg
import pytest
from celery import Celery
from django.core.management import call_command
from django.db import connection
from django.db.models import Sum

from monitors.models import JobExecution, RecorderProcess
from tests.workers import WorkerProcess, database_url_for_workers, fresh_redis_url, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

JOBS_DURING_OUTAGE = 60
WORKER_EVENTS_PER_JOB = 2  # started (with the receive time) and succeeded, from the pool process
BUFFER_SIZE = 20


def set_connections_allowed(database, allowed):
    """Open or shut a database to new connections, and end the open ones (but the test's own)."""
    settings = connection.settings_dict
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        own_backend = cursor.fetchone()[0]
    with psycopg.connect(host=settings["HOST"], port=settings["PORT"], user=settings["USER"], dbname="postgres", autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS {"true" if allowed else "false"}')
        if not allowed:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> %s",
                [database, own_backend],
            )


def worker_counters():
    rows = RecorderProcess.objects.exclude(pid=os.getpid())
    return rows.aggregate(recorded=Sum("events_recorded"), overflow=Sum("events_dropped_overflow"), error=Sum("events_dropped_error"))


def worker_rows():
    """Each worker process's counters (the main process and each pool process)."""
    fields = ["pid", "events_recorded", "events_dropped_overflow", "events_dropped_error", "write_errors"]
    return list(RecorderProcess.objects.exclude(pid=os.getpid()).values(*fields))


def test_jobs_succeed_while_the_database_is_down_and_the_drop_counter_says_what_was_lost(tmp_path):
    database = connection.settings_dict["NAME"]
    broker, results = fresh_redis_url(11), fresh_redis_url(12)
    # A Redis result backend shows the jobs succeeding while the database is unreachable.
    app = Celery("fault-test", broker=broker, backend=results, set_as_current=False)
    env = {
        "DATABASE_URL": database_url_for_workers(),
        "CELERY_BROKER_URL": broker,
        "CELERY_RESULT_BACKEND": results,
        "JOBWATCH_RECORDER_BUFFER_SIZE": str(BUFFER_SIZE),
    }
    with WorkerProcess(tmp_path / "worker.log", env=env) as worker:
        before = app.send_task("demo.tasks.noop")
        before.get(timeout=30)
        wait_for(lambda: JobExecution.objects.filter(task_id=before.id, state="succeeded").exists(), what="a job recorded")

        set_connections_allowed(database, False)
        try:
            during = [app.send_task("demo.tasks.noop") for _ in range(JOBS_DURING_OUTAGE)]
            assert [result.get(timeout=60) for result in during] == [None] * JOBS_DURING_OUTAGE
            assert all(result.state == "SUCCESS" for result in during)
            # An outage longer than a flush: the jobs can all finish before any writer's next
            # flush interval comes round, and a buffer then overflows with nothing yet tried.
            wait_for(lambda: "could not write to the database" in worker.log(), timeout=30,
                     what="a writer to try the database during the outage")
        finally:
            set_connections_allowed(database, True)

        # The test's own pool holds connections the outage ended: start a fresh one.
        connection.close()
        connection.close_pool()
        expected = WORKER_EVENTS_PER_JOB * (JOBS_DURING_OUTAGE + 1)

        def settled():
            counts = worker_counters()
            total = sum(value or 0 for value in counts.values())
            return counts if total == expected else None

        counts = wait_for(settled, timeout=60, what=f"worker counters to account for {expected} events",
                          explain=lambda: f"the processes' counters: {worker_rows()}")
        assert "could not write to the database" in worker.log()

    dropped = counts["overflow"] + counts["error"]
    assert dropped > 0, "the outage outlasted the buffer, so some events must have been dropped"
    for process in worker_rows():
        # Each process kept a full buffer's worth (or all it saw) for after the outage. How the
        # jobs split between the two pool processes is the pool's business: on a loaded machine
        # one may run nearly all of them.
        seen = process["events_recorded"] + process["events_dropped_overflow"] + process["events_dropped_error"]
        assert process["events_recorded"] >= min(seen, BUFFER_SIZE), process
    output = StringIO()
    call_command("jobwatch_recorder", "--json", stdout=output)
    report = json.loads(output.getvalue())
    workers = [p for p in report["processes"] if p["pid"] != os.getpid()]
    assert sum(p["events_dropped_overflow"] + p["events_dropped_error"] for p in workers) == dropped
    # A process that dropped events because a write failed counted the failure; one whose buffer
    # overflowed may not have reached its next flush before the database was back (a full buffer
    # drops at once, whatever the writer is doing), so only the outage as a whole must show one.
    assert all(p["write_errors"] > 0 for p in workers if p["events_dropped_error"])
    assert any(p["write_errors"] > 0 for p in workers)


def test_a_warm_shutdown_writes_what_the_worker_still_had_buffered(tmp_path):
    broker = fresh_redis_url(10)
    app = Celery("shutdown-test", broker=broker, set_as_current=False)
    env = {
        "DATABASE_URL": database_url_for_workers(),
        "CELERY_BROKER_URL": broker,
        "JOBWATCH_RECORDER_FLUSH_INTERVAL": "3600",  # only the shutdown flush can write in time
    }
    worker = WorkerProcess(tmp_path / "worker.log", env=env).start()
    try:
        job = app.send_task("demo.tasks.noop")
        wait_for(lambda: "succeeded in" in worker.log(), what="the job to run")
        assert not JobExecution.objects.filter(task_id=job.id, state="succeeded").exists()
    finally:
        worker.stop()
    recorded = JobExecution.objects.get(task_id=job.id)
    assert recorded.state == "succeeded"
    assert recorded.received_at and recorded.started_at and recorded.finished_at
