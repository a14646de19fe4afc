"""Pausing a queue on real workers, on Redis and RabbitMQ: a pause stops every worker consuming it
at once (the broadcast) while its jobs wait; a worker started while it is paused never touches it;
a resume lets them drain it. And where the broadcast does not reach a worker, the worker's own
check does; a queue a worker was never told to consume is never started by a resume."""

import time
import uuid

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from monitors.actions import ActionRefused, pause_queue, resume_queue
from monitors.models import ActionLog, JobExecution, QueuePause
from tests.brokers import broker_url_of, celery_app, scratch_queue, staff_with
from tests.workers import WorkerProcess, database_url_for_workers, fresh_redis_url, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]
QUIET_SECONDS = 3  # long enough for a worker that still consumed the queue to start a job


@pytest.fixture
def operator():
    return staff_with("pause_queues")


@pytest.fixture(params=["redis", "rabbitmq"])
def broker_url(request):
    return broker_url_of(request.param, 11)


@pytest.fixture
def queue(broker_url):
    with scratch_queue(broker_url, "pause-test") as name:
        yield name


def worker(tmp_path, broker_url, queue, name, check_seconds=3600):
    """A worker on `queue` (and `celery`); by default it does not check on its own, so what it
    does about a pause comes from the broadcast or its start."""
    env = {"DATABASE_URL": database_url_for_workers(), "CELERY_BROKER_URL": broker_url,
           "JOBWATCH_TEST_PAUSE_CHECK_SECONDS": str(check_seconds)}
    return WorkerProcess(tmp_path / f"{name}.log", env=env, queues=f"{queue},celery", name=name)


def send(app, queue, count):
    return [app.send_task("demo.tasks.echo", args=[n], queue=queue).id for n in range(count)]


def started(task_ids):
    return JobExecution.objects.filter(task_id__in=task_ids, started_at__isnull=False).count()


def test_pause_stops_every_worker_a_new_one_stays_off_and_resume_drains_it(tmp_path, broker_url, queue, operator):
    app = celery_app(broker_url)
    with worker(tmp_path, broker_url, queue, "first") as first:
        warm = send(app, queue, 3)
        wait_for(lambda: started(warm) == 3, timeout=30, what="the queue consumed before the pause")

        paused = pause_queue(operator, queue, reason="bad deploy eats it", surface="command", app=app)
        assert paused.log.outcome == "succeeded" and paused.log.parameters["workers"] == [first.name_on_host()]
        row = QueuePause.objects.get(queue=queue)
        assert (row.paused_by, row.reason, row.action_id) == ("oncall", "bad deploy eats it", paused.log.pk)

        waiting = send(app, queue, 5)
        wait_for(lambda: JobExecution.objects.filter(task_id__in=waiting).count() == 5, what="the enqueues recorded")
        time.sleep(QUIET_SECONDS)
        assert started(waiting) == 0, "a job of the paused queue started"

        with worker(tmp_path, broker_url, queue, "second") as second:
            assert f"queue {queue} is paused" in second.log()
            time.sleep(QUIET_SECONDS)
            assert started(waiting) == 0, "the worker started while paused consumed the queue"

            resumed = resume_queue(operator, queue, surface="command", app=app)
            assert sorted(resumed.log.parameters["workers"]) == sorted([first.name_on_host(), second.name_on_host()])
            assert not QueuePause.objects.filter(queue=queue).exists()
            wait_for(lambda: JobExecution.objects.filter(task_id__in=waiting, state="succeeded").count() == 5,
                     timeout=30, what="the queue drained after the resume")
    assert list(ActionLog.objects.filter(action__in=["pause_queue", "resume_queue"]).order_by("pk")
                .values_list("action", "outcome", "username")) == [("pause_queue", "succeeded", "oncall"),
                                                                 ("resume_queue", "succeeded", "oncall")]


@pytest.fixture
def redis_queue():
    return f"pause-test-{uuid.uuid4().hex[:8]}"


def test_a_worker_the_broadcast_missed_follows_the_pause_on_its_own(tmp_path, redis_queue, operator):
    """The pause written without a broadcast (a broker that cannot broadcast, a worker that was
    reconnecting): the worker's own check, every second here, stops and restarts it."""
    broker_url, queue = fresh_redis_url(11), redis_queue
    app = celery_app(broker_url)
    with worker(tmp_path, broker_url, queue, "checker", check_seconds=1):
        QueuePause.objects.create(queue=queue, paused_at=timezone.now(), paused_by="someone")
        time.sleep(2.5)  # two checks
        waiting = send(app, queue, 3)
        wait_for(lambda: JobExecution.objects.filter(task_id__in=waiting).count() == 3, what="the enqueues recorded")
        time.sleep(QUIET_SECONDS)
        assert started(waiting) == 0
        QueuePause.objects.filter(queue=queue).delete()
        wait_for(lambda: JobExecution.objects.filter(task_id__in=waiting, state="succeeded").count() == 3,
                 timeout=20, what="the queue drained once the pause was gone")


def test_pausing_needs_its_permission_and_a_refusal_is_audited(redis_queue):
    queue = redis_queue
    viewer = User.objects.create_user("viewer", is_staff=True)
    with pytest.raises(ActionRefused) as refused:
        pause_queue(viewer, queue, surface="dashboard")
    assert refused.value.permission == "monitors.pause_queues"
    assert not QueuePause.objects.exists()
    assert ActionLog.objects.get(action="pause_queue").outcome == "refused"
