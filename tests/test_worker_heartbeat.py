"""What the Workers page and the charts read, written by a real worker: its heartbeat row (node
name, queues, refreshed while idle, marked stopped at a warm shutdown) and the per-minute tallies
of its jobs."""

import pytest
from django.db.models import Sum

from dashboard.celery import app
from monitors.models import JobTally, RecorderProcess
from tests.workers import WorkerProcess, database_url_for_workers, fresh_redis_url, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration]


def test_a_worker_reports_itself_while_idle_counts_its_jobs_and_says_when_it_stopped(tmp_path, flush_recorder):
    env = {"DATABASE_URL": database_url_for_workers(), "CELERY_BROKER_URL": fresh_redis_url(14),
           "JOBWATCH_TEST_HEARTBEAT_SECONDS": "1"}
    worker = WorkerProcess(tmp_path / "worker.log", env=env, queues="celery,mail", name="beating").start()
    try:
        main = wait_for(lambda: RecorderProcess.objects.filter(node__startswith="beating@", queues__isnull=False).first(),
                        timeout=20, what="the worker's heartbeat row")
        assert sorted(main.queues) == ["celery", "mail"] and main.stopped_at is None
        first_beat = main.last_flush_at
        # No job at all, and still the row is refreshed: an idle worker is alive, not vanished.
        wait_for(lambda: RecorderProcess.objects.get(pk=main.pk).last_flush_at > first_beat, timeout=10,
                 what="an idle heartbeat")

        def tallied(metric):
            rows = JobTally.objects.filter(metric=metric, task_name="demo.tasks.noop", queue="mail")
            return rows.aggregate(n=Sum("count"))["n"] or 0

        # This process's recorder may still hold counts of an earlier test's jobs: count from here.
        flush_recorder()
        before = {metric: tallied(metric) for metric in ("sent", "started", "succeeded")}
        for _ in range(3):
            app.send_task("demo.tasks.noop", queue="mail")
        flush_recorder()
        wait_for(lambda: tallied("succeeded") - before["succeeded"] == 3, timeout=20, what="3 successes tallied")
        assert tallied("sent") - before["sent"] == 3 and tallied("started") - before["started"] == 3
        # Tallied under the queue the jobs were routed to (an earlier test's leftovers may sit beside them).
        assert "mail" in set(JobTally.objects.filter(metric="sent", task_name="demo.tasks.noop").values_list("queue", flat=True))
    finally:
        worker.stop()
    assert RecorderProcess.objects.get(pk=main.pk).stopped_at is not None
