"""Each way a job gets enqueued records its origin, field by field, with a real worker on Redis
and PostgreSQL. The demo shop's receivers are the cases (demo/receivers.py)."""

import pytest
from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from demo import tasks
from demo.models import Customer, Order
from monitors.models import JobExecution
from tests.workers import WorkerProcess, fresh_redis_url, database_url_for_workers, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]
FINISHED = ("succeeded", "failed")


@pytest.fixture(scope="module", autouse=True)
def worker(django_db_setup, tmp_path_factory):
    from django.conf import settings

    env = {
        "DATABASE_URL": database_url_for_workers(),
        "CELERY_BROKER_URL": fresh_redis_url(14) if settings.CELERY_BROKER_URL.endswith("/14") else settings.CELERY_BROKER_URL,
        "DEMO_GATEWAY_URL": "http://127.0.0.1:9",  # nothing listens: charges fail fast
    }
    with WorkerProcess(tmp_path_factory.mktemp("origins") / "worker.log", env=env) as process:
        yield process


def finished_job(task_name, **filters):
    """The job once it finished and its enqueue (with the origin) was recorded too."""
    return wait_for(
        lambda: JobExecution.objects.filter(task_name=task_name, state__in=FINISHED, **filters)
        .exclude(origin_kind="")
        .first(),
        timeout=30,
        what=f"{task_name} {filters} to finish",
    )


def test_it_records_delay_in_a_post_save_receiver():
    customer = Customer.objects.create(name="Ann", email="ann@example.com")

    job = finished_job("demo.tasks.sync_customer_to_crm", origin_pk=str(customer.pk))

    assert job.state == "succeeded"
    assert job.origin_kind == "save"
    assert job.origin_model == "demo.Customer"
    assert job.origin_created is True
    assert job.origin_update_fields is None
    assert job.origin_receiver == "demo.receivers.sync_customer_to_crm"
    assert job.origin_in_atomic is False
    assert job.origin_deferred == ""
    assert job.origin_transaction == ""
    assert job.origin_committed_at is None
    assert job.origin_request == ""
    assert job.origin_task == ""
    assert job.references == [{"arg": "customer_id", "model": "demo.Customer", "pk": customer.pk}]
    assert job.args == [customer.pk] and job.kwargs == {}
    assert job.queue == "celery"
    assert job.worker.startswith("test@") and job.worker_pid
    assert job.enqueued_at <= job.received_at <= job.started_at <= job.finished_at
    assert job.runtime > 0
    assert job.result == repr({"synced": "ann@example.com"})


def test_it_records_the_fields_of_a_save_that_only_touched_last_seen_at():
    customer = Customer.objects.create(name="Bo", email="bo@example.com")
    customer.last_seen_at = timezone.now()
    customer.save(update_fields=["last_seen_at"])

    job = finished_job("demo.tasks.refresh_customer_segments", origin_pk=str(customer.pk), origin_created=False)

    assert job.origin_kind == "save"
    assert job.origin_update_fields == ["last_seen_at"]
    assert job.origin_receiver == "demo.receivers.refresh_customer_segments"


def test_it_records_on_commit_in_a_receiver_with_the_receiver_and_the_commit():
    with transaction.atomic():
        customer = Customer.objects.create(name="Cy", email="cy@example.com")

    deferred = finished_job("demo.tasks.index_customer", origin_pk=str(customer.pk))
    immediate = finished_job("demo.tasks.sync_customer_to_crm", origin_pk=str(customer.pk))

    assert deferred.origin_kind == "save"
    assert deferred.origin_model == "demo.Customer"
    assert deferred.origin_created is True
    assert deferred.origin_receiver == "demo.receivers.reindex_customer"
    assert deferred.origin_deferred == "on_commit"
    assert deferred.origin_in_atomic is True
    assert deferred.origin_committed_at is not None
    assert deferred.origin_transaction and deferred.origin_transaction == immediate.origin_transaction
    # The receiver that called .delay() inside the same transaction is flagged, and its commit seen.
    assert immediate.origin_in_atomic is True and immediate.origin_deferred == ""
    wait_for(lambda: JobExecution.objects.get(pk=immediate.pk).origin_committed_at, what="commit noted")


def test_it_records_delay_on_commit():
    customer = Customer.objects.create(name="Di", email="di@example.com")
    with transaction.atomic():
        order = Order.objects.create(customer=customer, total_cents=500)

    job = finished_job("demo.tasks.send_order_confirmation", origin_pk=str(order.pk))

    assert job.origin_kind == "save"
    assert job.origin_model == "demo.Order"
    assert job.origin_receiver == "demo.receivers.confirm_order"
    assert job.origin_deferred == "delay_on_commit"
    assert job.origin_in_atomic is True
    assert job.origin_committed_at is not None
    assert job.references == [{"arg": "order_id", "model": "demo.Order", "pk": order.pk}]


def test_it_records_delay_in_a_view_with_the_request(client):
    customer = Customer.objects.create(name="Ed", email="ed@example.com")
    order = Order.objects.create(customer=customer, total_cents=700)
    client.force_login(User.objects.create_user("op", is_staff=True))

    response = client.post(f"/demo/orders/{order.pk}/resend-confirmation/")

    assert response.status_code == 200
    job = finished_job("demo.tasks.send_order_confirmation", task_id=response.json()["task_id"])
    assert job.origin_kind == "request"
    assert job.origin_request == f"POST /demo/orders/{order.pk}/resend-confirmation/"
    assert job.origin_request_id
    assert job.origin_receiver == "demo.views.resend_confirmation"
    assert job.origin_model == "" and job.origin_in_atomic is False


def test_it_records_a_task_that_enqueues_a_task():
    customer = Customer.objects.create(name="Fay", email="fay@example.com")
    order = Order.objects.create(customer=customer, total_cents=900)

    parent = tasks.generate_invoices.delay([order.pk])

    child = finished_job("demo.tasks.send_order_confirmation", parent_id=parent.id)
    assert child.origin_kind == "task"
    assert child.origin_task == "demo.tasks.generate_invoices"
    assert child.origin_receiver == "demo.tasks.generate_invoices"
    assert child.root_id == parent.id
    assert finished_job("demo.tasks.generate_invoices", task_id=parent.id).result == "1"


def test_it_groups_a_bulk_loop_of_saves_by_its_transaction():
    with transaction.atomic():
        customers = [Customer.objects.create(name=f"bulk {n}", email=f"b{n}@example.com") for n in range(5)]

    pks = [str(customer.pk) for customer in customers]
    jobs = wait_for(
        lambda: (lambda found: found if len(found) == 15 else None)(
            list(JobExecution.objects.filter(origin_pk__in=pks, state__in=FINISHED).exclude(origin_kind=""))
        ),
        what="15 jobs from 5 saves",
    )
    assert len({job.origin_transaction for job in jobs}) == 1 and jobs[0].origin_transaction
    assert sorted({job.origin_pk for job in jobs}) == sorted(pks)
    # Each save's three receivers share one save id, deferred job included: 5 saves, 3 jobs each.
    saves = {}
    for job in jobs:
        saves.setdefault(job.origin_save, set()).add((job.origin_pk, job.task_name))
    assert len(saves) == 5 and all(len(jobs_of_save) == 3 for jobs_of_save in saves.values())
    assert all(len({pk for pk, _ in jobs_of_save}) == 1 for jobs_of_save in saves.values())
    assert sum(job.origin_deferred == "on_commit" for job in jobs) == 5
    assert sum(job.origin_in_atomic and not job.origin_deferred for job in jobs) == 10


def test_it_records_a_job_enqueued_in_a_transaction_that_rolled_back():
    customer = Customer.objects.create(name="Gus", email="gus@example.com")
    with pytest.raises(RuntimeError), transaction.atomic():
        order = Order.objects.create(customer=customer, total_cents=100)
        raise RuntimeError("payment declined")

    job = finished_job("demo.tasks.reserve_inventory", origin_pk=str(order.pk))

    assert job.origin_in_atomic is True and job.origin_deferred == ""
    assert job.origin_committed_at is None  # the transaction never committed
    assert job.state == "failed"
    assert job.exception_type == "demo.models.Order.DoesNotExist"
    # The confirmation was deferred to a commit that never came: it was never enqueued.
    assert not JobExecution.objects.filter(task_name="demo.tasks.send_order_confirmation", origin_pk=str(order.pk)).exists()


def test_it_records_failures_retries_eta_and_redacted_arguments():
    failing = tasks.charge_payment.delay(123456)
    retrying = tasks.flaky.delay(2)
    later = tasks.echo.apply_async(kwargs={"password": "hunter2", "note": "x" * 5000}, countdown=1)

    failed = finished_job("demo.tasks.charge_payment", task_id=failing.id)
    assert failed.state == "failed"
    assert failed.exception_type == "demo.models.Payment.DoesNotExist"
    assert "Payment matching query does not exist" in failed.traceback

    # Attempts may run in different pool processes, each writing on its own: the row converges
    # once every process has flushed, whatever the order.
    retried = wait_for(
        lambda: JobExecution.objects.filter(task_id=retrying.id, state="succeeded", exception_type="ConnectionError").first(),
        what="the retried job with its last error",
    )
    assert retried.retries == 2
    assert retried.result == "2"
    assert retried.exception_message == "flaky service"  # the last error before it succeeded

    echoed = finished_job("demo.tasks.echo", task_id=later.id)
    twin = tasks.echo.apply_async(kwargs={"note": "x" * 5000, "password": "hunter2"})
    assert finished_job("demo.tasks.echo", task_id=twin.id).payload_hash == echoed.payload_hash != ""
    assert echoed.eta is not None and echoed.eta >= echoed.enqueued_at
    assert echoed.kwargs["password"] == "[redacted]"
    assert echoed.kwargs["note"].startswith("x" * 1000) and "5000 chars" in echoed.kwargs["note"]
    assert echoed.payload_complete is False
    assert echoed.payload_size > 5000


def test_a_job_for_a_task_no_worker_has_is_a_failure_in_a_group_of_its_own(client):
    """A deploy that renamed a task, a worker on old code, a typo in send_task: Celery drops the
    message and marks it failed (NotRegistered). Jobwatch counts it as a failure, under its own
    exception, on the Failures page and in the failure tallies — not as a quiet "rejected"."""
    from celery import current_app

    from monitors.models import JobTally

    sent = current_app.send_task("billing.invoice_renamed", args=[7], queue="celery")
    job = wait_for(lambda: JobExecution.objects.filter(task_id=sent.id, state="failed").first(), 30, "the drop recorded")
    assert job.exception_type == "celery.exceptions.NotRegistered"
    assert "has no task named 'billing.invoice_renamed'" in job.exception_message and job.worker
    assert job.task_name == "billing.invoice_renamed" and job.queue == "celery"
    wait_for(lambda: JobTally.objects.filter(metric="failed", task_name="billing.invoice_renamed",
                                             exception="NotRegistered").exists(), 30, "the failure counted")

    client.force_login(User.objects.create_user("ops", is_staff=True))
    groups = client.get("/jobwatch/api/failures/?window=1h").json()["groups"]
    assert [(group["task_name"], group["exception"], group["failures"]) for group in groups
            if group["task_name"] == "billing.invoice_renamed"] == [("billing.invoice_renamed", "NotRegistered", 1)]
