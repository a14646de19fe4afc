"""Replay with a real worker on Redis and PostgreSQL: by filter (exactly the matching jobs, run
again), idempotent per request, refused (with the reason) when a record is gone or the
arguments were not kept whole, and sent with the full original arguments when they were."""

import json

import pytest
from django.contrib.auth.models import Permission, User

from demo import tasks
from demo.gateway import start as start_gateway
from demo.models import Customer, Order
from monitors.actions import replay_jobs
from monitors.models import JobExecution, JobPayload
from monitors.actions.selection import JobSelection
from tests.workers import WorkerProcess, database_url_for_workers, fresh_redis_url, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]
WAREHOUSE = "demo.tasks.notify_warehouse"


@pytest.fixture
def gateway():
    server = start_gateway(port=0, up=False)
    yield server
    server.stop()


@pytest.fixture
def worker(tmp_path, gateway, settings):
    settings.DEMO_GATEWAY_URL = gateway.url
    env = {"DATABASE_URL": database_url_for_workers(), "CELERY_BROKER_URL": fresh_redis_url(14), "DEMO_GATEWAY_URL": gateway.url}
    with WorkerProcess(tmp_path / "worker.log", env=env) as process:
        yield process


@pytest.fixture
def operator():
    user = User.objects.create_user("oncall", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="replay_jobs"))
    return User.objects.get(pk=user.pk)


def failed(task, count):
    return wait_for(lambda: list(JobExecution.objects.filter(task_name=task, state="failed")) if
                    JobExecution.objects.filter(task_name=task, state="failed").count() >= count else None,
                    timeout=60, what=f"{count} failed {task}")


def test_replay_by_filter_sends_exactly_the_matching_jobs_once_and_the_worker_runs_them(gateway, worker, operator):
    customer = Customer.objects.create(name="R", email="r@example.com")
    orders = [Order.objects.create(customer=customer, total_cents=10 + n) for n in range(4)]
    for order in orders:
        tasks.notify_warehouse.delay(order.pk)  # the warehouse is down: they fail
    tasks.reserve_inventory.delay(999_999)  # another task failing: not selected
    originals = {job.task_id for job in failed(WAREHOUSE, 4)}
    failed("demo.tasks.reserve_inventory", 1)

    gateway.set_up(True)
    selection = JobSelection.from_filter({"task": WAREHOUSE, "state": "failed"})
    preview = replay_jobs(operator, selection, dry_run=True, surface="command")
    assert preview.matched == 4 and all(verdict.allowed for verdict in preview.sample)
    result = replay_jobs(operator, selection, request_key="click-1", surface="dashboard")
    assert (result.log.outcome, result.log.succeeded, result.log.failed) == ("succeeded", 4, 0)

    replays = wait_for(lambda: list(JobExecution.objects.filter(replay_of__in=originals, state="succeeded"))
                       if JobExecution.objects.filter(replay_of__in=originals, state="succeeded").count() == 4 else None,
                       timeout=60, what="the 4 replays to run")
    assert {job.replay_of for job in replays} == originals
    assert {job.task_name for job in replays} == {WAREHOUSE} and all(job.queue == "celery" for job in replays)
    assert gateway.stats()["warehouse_calls"] == 8  # 4 failed, 4 replayed

    # The same request again (a double click): nothing new is sent.
    again = replay_jobs(operator, selection, request_key="click-1", surface="dashboard")
    assert again.log.parameters["already_sent"] == 4
    assert JobExecution.objects.filter(replay_of__in=originals).count() == 4
    assert gateway.stats()["warehouse_calls"] == 8


def test_a_job_whose_record_is_gone_is_refused_unless_forced(gateway, worker, operator):
    order = Order.objects.create(customer=Customer.objects.create(name="G", email="g@example.com"), total_cents=5)
    tasks.notify_warehouse.delay(order.pk)
    [job] = failed(WAREHOUSE, 1)
    Order.objects.filter(pk=order.pk).delete()

    refused = replay_jobs(operator, JobSelection.from_ids([job.task_id]), surface="command")
    assert (refused.log.succeeded, refused.log.failed) == (0, 1)
    assert "demo.Order" in refused.log.parameters["refused"][0]["reason"] and "force" in refused.log.parameters["refused"][0]["reason"]
    forced = replay_jobs(operator, JobSelection.from_ids([job.task_id]), force=True, surface="command")
    assert forced.log.succeeded == 1


def test_a_replay_sends_the_full_arguments_even_when_the_table_shows_them_redacted(gateway, worker, operator):
    note = "x" * 3000
    tasks.call_partner.delay(f"{gateway.url.rsplit(':', 1)[0]}:9/orders", {"note": note}, api_token="s3cret")
    [job] = failed("demo.tasks.call_partner", 1)
    assert job.payload_complete is False and job.kwargs["api_token"] == "[redacted]"

    # A failed job's full arguments are written just after its row, in a transaction of their own.
    def kept(task_id):
        return JobPayload.objects.filter(task_id=task_id).first()

    wait_for(lambda: kept(job.task_id), timeout=30, what="the failed job's full arguments kept")

    replay_jobs(operator, JobSelection.from_ids([job.task_id]), surface="command")
    replay = wait_for(lambda: JobExecution.objects.filter(replay_of=job.task_id, state="failed").first(), timeout=60,
                      what="the replay to fail the same way")
    # What the replay ran with, kept (it failed too): the real token and the whole note.
    payload = wait_for(lambda: kept(replay.task_id), timeout=30, what="the replay's full arguments kept")
    args, kwargs = json.loads(payload.body)
    assert kwargs == {"api_token": "s3cret"} and args[1] == {"note": note}


def test_a_job_whose_arguments_were_not_kept_whole_is_refused_with_the_reason(operator):
    from django.utils import timezone

    JobExecution.objects.create(task_id="cut", task_name="demo.tasks.echo", state="succeeded", payload_complete=False,
                                args=["x…"], kwargs={}, enqueued_at=timezone.now(), updated_at=timezone.now())
    result = replay_jobs(operator, JobSelection.from_ids(["cut"]), surface="command")
    assert result.log.failed == 1 and "redacted or truncated" in result.log.parameters["refused"][0]["reason"]


def test_a_large_replay_runs_in_the_background_with_progress_and_finishes(gateway, worker, operator, settings):
    from monitors.models import ActionLog

    settings.JOBWATCH = {**settings.JOBWATCH, "ACTION_INLINE_LIMIT": 10, "ACTION_BATCH_SIZE": 10}
    gateway.set_up(True)
    customer = Customer.objects.create(name="B", email="b@example.com")
    for n in range(30):
        tasks.echo.delay(Order.objects.create(customer=customer, total_cents=n).pk)
    wait_for(lambda: JobExecution.objects.filter(task_name="demo.tasks.echo", state="succeeded").count() == 30, timeout=60,
             what="30 jobs to run")

    result = replay_jobs(operator, JobSelection.from_filter({"task": "demo.tasks.echo"}), surface="dashboard")
    assert result.background and result.log.outcome == "running"
    done = wait_for(lambda: ActionLog.objects.filter(pk=result.log.pk).exclude(outcome="running").first(), timeout=60,
                    what="the background run to finish")
    assert (done.outcome, done.matched, done.succeeded, done.failed) == ("succeeded", 30, 30, 0)
    wait_for(lambda: JobExecution.objects.filter(task_name="demo.tasks.echo", state="succeeded").exclude(replay_of="").count() == 30,
             timeout=60, what="the 30 replays to run")
