"""Cancelling jobs with real workers, on Redis and RabbitMQ: a queued job is taken off its queue
(archived), never runs, says who cancelled it — and runs after all once its message is restored;
a running job is terminated and its row says revoked, by whom and why."""


import pytest
from django.contrib.auth.models import User

from monitors.actions import ActionRefused, cancel_jobs, restore_messages
from monitors.actions.selection import JobSelection
from monitors.models import ActionLog, ArchivedMessage, JobExecution
from tests.brokers import broker_url_of, celery_app, scratch_queue, staff_with
from tests.workers import WorkerProcess, database_url_for_workers, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def operator():
    return staff_with("cancel_jobs", "restore_messages")


@pytest.fixture(params=["redis", "rabbitmq"])
def broker_url(request):
    return broker_url_of(request.param, 12)


@pytest.fixture
def queue(broker_url):
    with scratch_queue(broker_url, "cancel-test") as name:
        yield name


def worker(tmp_path, broker_url, queue):
    env = {"DATABASE_URL": database_url_for_workers(), "CELERY_BROKER_URL": broker_url}
    return WorkerProcess(tmp_path / "worker.log", env=env, queues=f"{queue},celery")


def row(task_id):
    return JobExecution.objects.get(task_id=task_id)


def test_a_queued_job_is_taken_off_its_queue_never_runs_and_runs_once_restored(tmp_path, broker_url, queue, operator):
    app = celery_app(broker_url)
    sent = [app.send_task("demo.tasks.echo", args=[n], queue=queue).id for n in range(3)]
    wait_for(lambda: JobExecution.objects.filter(task_id__in=sent, state="enqueued").count() == 3, what="the enqueues")
    cancelled = sent[1]

    preview = cancel_jobs(operator, JobSelection.from_ids([cancelled]), reason="wrong customer", dry_run=True, app=app)
    assert preview.matched == 1 and preview.log.parameters["plan"] == {"queued": 1, "held": 0, "running": 0}
    result = cancel_jobs(operator, JobSelection.from_ids([cancelled]), reason="wrong customer", surface="command", app=app)
    assert result.log.outcome == "succeeded" and result.log.parameters["taken_off_queue"] == 1
    job = row(cancelled)
    assert (job.state, job.cancelled_by, job.cancel_reason) == ("revoked", "oncall (command)", "wrong customer")
    archived = ArchivedMessage.objects.get(task_id=cancelled)
    assert archived.removed_at and archived.action_id == result.log.pk

    with worker(tmp_path, broker_url, queue):
        others = [sent[0], sent[2]]
        wait_for(lambda: JobExecution.objects.filter(task_id__in=others, state="succeeded").count() == 2, timeout=30,
                 what="the other jobs to run")
        assert row(cancelled).started_at is None and row(cancelled).state == "revoked"

        restore_messages(operator, [archived.pk], surface="command", app=app)
        assert row(cancelled).state == "enqueued" and row(cancelled).cancelled_at is None
        wait_for(lambda: row(cancelled).state == "succeeded", timeout=30, what="the restored job to run")


def test_a_running_job_is_terminated_and_says_by_whom(tmp_path, broker_url, queue, operator):
    app = celery_app(broker_url)
    with worker(tmp_path, broker_url, queue) as running:
        task_id = app.send_task("demo.tasks.sleep_for", args=[60], queue=queue).id
        wait_for(lambda: JobExecution.objects.filter(task_id=task_id, state="started").exists(), timeout=30,
                 what="the job to start")
        left = cancel_jobs(operator, JobSelection.from_ids([task_id]), reason="stuck", dry_run=True, app=app)
        assert left.matched == 0 and "1 running job will go on running" in left.warning

        result = cancel_jobs(operator, JobSelection.from_ids([task_id]), reason="stuck", terminate=True,
                             surface="command", app=app)
        assert result.log.parameters["terminated"] == 1
        job = wait_for(lambda: JobExecution.objects.filter(task_id=task_id, state="revoked").first(), timeout=30,
                       what="the worker to record the termination",
                       explain=lambda: f"the job's row: {JobExecution.objects.filter(task_id=task_id).values().first()}; "
                                       f"the worker's log ends: {running.log()[-3000:]}")
        assert "terminated by signal 15" in job.exception_message
        assert (job.cancelled_by, job.cancel_reason) == ("oncall (command)", "stuck")
        assert job.runtime is None or job.runtime < 60


def test_cancelling_needs_its_permission_and_a_refusal_is_audited():
    JobExecution.objects.create(task_id="t-1", task_name="billing.send", state="enqueued", enqueued_at="2026-11-30T00:00Z",
                                updated_at="2026-11-30T00:00Z")
    viewer = User.objects.create_user("viewer", is_staff=True)
    with pytest.raises(ActionRefused) as refused:
        cancel_jobs(viewer, JobSelection.from_ids(["t-1"]))
    assert refused.value.permission == "monitors.cancel_jobs"
    assert row("t-1").cancelled_at is None
    assert ActionLog.objects.get(action="cancel_jobs").outcome == "refused"
