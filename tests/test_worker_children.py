"""Pool processes find their database connection working, the first ones and those forked later
(one job per child here, as with --max-tasks-per-child): the worker's main process reads the
paused queues before its pool forks, and must not leave a connection, or a pool of them, for its
children to inherit — with psycopg's pool (Celery 5.4) a child's first query would find the socket
closed. bin/test runs it on the oldest releases, where that happened."""

import pytest

from demo import tasks
from demo.models import Customer
from monitors.models import JobExecution
from tests.workers import WorkerProcess, database_url_for_workers, fresh_redis_url, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_children_forked_later_do_not_inherit_the_main_process_connections(tmp_path):
    broker_url = fresh_redis_url(13)
    env = {"DATABASE_URL": database_url_for_workers(), "CELERY_BROKER_URL": broker_url}
    worker = WorkerProcess(tmp_path / "worker.log", env=env, concurrency=1)
    worker.command += ["--max-tasks-per-child", "1"]
    customers = [Customer.objects.create(name=f"c{n}", email=f"c{n}@example.com") for n in range(4)]
    with worker:
        app = tasks.index_customer.app
        with app.connection_for_write(broker_url) as connection:
            sent = [tasks.index_customer.apply_async(args=[customer.pk], connection=connection).id for customer in customers]
        wait_for(lambda: JobExecution.objects.filter(task_id__in=sent, state__in=["succeeded", "failed"]).count() == 4,
                 timeout=60, what="four jobs, each in a child of its own")
        failed = list(JobExecution.objects.filter(task_id__in=sent, state="failed").values_list("exception_message", flat=True))
        assert failed == [], failed
