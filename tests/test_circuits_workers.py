"""The demo shop's charge job behind the shared circuit breaker, with two real worker processes
(two pool processes each) and the demo payment gateway, which counts every call that reaches it.

The circuit (tests/settings.py) opens after 3 failures and lets 2 trial calls through after a
4-second cool-down.
"""

import time
from datetime import timedelta

import pytest
from django.db.models import Sum
from django.utils import timezone

from demo.gateway import start as start_gateway
from demo.models import Customer, Order, Payment
from monitors.detectors import run_detectors
from monitors.models import Circuit, CircuitEvent, Finding, JobExecution
from tests.workers import WorkerProcess, database_url_for_workers, fresh_redis_url, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

CHARGE = "demo.tasks.charge_payment"
FAIL_MAX, COOL_DOWN, TRIAL_CALLS = 3, 4.0, 2
PAYMENTS = 16
POOL_PROCESSES = 4  # two workers, concurrency 2 each


@pytest.fixture
def gateway():
    server = start_gateway(port=0)
    yield server
    server.stop()


@pytest.fixture(params=["database", "redis"])
def circuit_store(request, settings):
    """The breaker's shared state in the database (the default) or in Redis."""
    store = "database" if request.param == "database" else fresh_redis_url(13)
    settings.JOBWATCH = {**settings.JOBWATCH, "CIRCUIT_STORE": store}
    return store


@pytest.fixture
def workers(tmp_path, gateway, circuit_store):
    env = {"DATABASE_URL": database_url_for_workers(),
           "CELERY_BROKER_URL": fresh_redis_url(14),  # where this process publishes (tests/settings.py)
           "DEMO_GATEWAY_URL": gateway.url, "JOBWATCH_CIRCUIT_STORE": circuit_store}
    with WorkerProcess(tmp_path / "a.log", env=env, name="a"), WorkerProcess(tmp_path / "b.log", env=env, name="b"):
        yield


def circuit():
    return Circuit.objects.filter(name="payment-gateway").first()


def transitions():
    return list(CircuitEvent.objects.filter(circuit="payment-gateway").order_by("at", "id").values_list("from_state", "to_state"))


def test_an_outage_opens_the_circuit_for_every_worker_jobs_wait_and_all_succeed_when_it_is_back(gateway, circuit_store, workers):
    gateway.set_up(False)  # refuses charges with 503
    order = Order.objects.create(customer=Customer.objects.create(name="Ann", email="ann@example.com"), total_cents=100)
    for cents in range(PAYMENTS):
        Payment.objects.create(order=order, amount_cents=100 + cents)  # each enqueues a charge on commit

    # Opens after FAIL_MAX failures, whichever processes saw them.
    wait_for(lambda: circuit() and circuit().state == "open", timeout=60, what="the circuit to open")
    opened_at = circuit().opened_at
    time.sleep(0.5)  # calls let through just before it opened come back now
    calls_when_open = gateway.stats()["calls_total"]
    # The failures that opened it, and at most one call per other pool process already on its way.
    assert FAIL_MAX <= calls_when_open <= FAIL_MAX + POOL_PROCESSES - 1

    # Jobs wait instead of failing: recorded as waiting on the circuit, not failed.
    wait_for(lambda: JobExecution.objects.filter(task_name=CHARGE, state="waiting", circuit="payment-gateway").count()
             >= PAYMENTS - calls_when_open, timeout=30, what="the other charges to wait on the circuit")
    assert not JobExecution.objects.filter(task_name=CHARGE, state="failed").exists()

    # While open, no process calls the gateway: not one call until the cool-down is over.
    until_cool_down_ends = (opened_at + timedelta(seconds=COOL_DOWN) - timezone.now()).total_seconds()
    time.sleep(max(until_cool_down_ends - 0.3, 0))
    assert gateway.stats()["calls_total"] == calls_when_open

    # The monitor sees it, with the jobs piling up behind it.
    run_detectors(["circuits"])
    finding = Finding.objects.get(kind="circuit_open", subject="payment-gateway", status="open")
    assert finding.evidence["jobs_waiting"] >= PAYMENTS - calls_when_open
    assert finding.evidence["opened_by"] == "demo.gateway_client.GatewayError"
    assert finding.evidence["state_read_from"] == ("redis" if circuit_store.startswith("redis") else "database")
    assert "503" in finding.evidence["last_error"] and finding.evidence["waiting_by_queue"] == {"celery": finding.evidence["jobs_waiting"]}

    # Half-open with the gateway still down: only trial calls get through, and one failing opens it again.
    wait_for(lambda: transitions()[-2:] == [("open", "half_open"), ("half_open", "open")], timeout=30,
             what="a failed trial to re-open the circuit")
    reopened_at = circuit().opened_at
    time.sleep(0.5)
    calls_after_trials = gateway.stats()["calls_total"]
    assert 1 <= calls_after_trials - calls_when_open <= TRIAL_CALLS
    until_cool_down_ends = (reopened_at + timedelta(seconds=COOL_DOWN) - timezone.now()).total_seconds()
    time.sleep(max(until_cool_down_ends - 0.3, 0))
    assert gateway.stats()["calls_total"] == calls_after_trials

    # The gateway is back: the trials succeed, the circuit closes, and every charge goes through.
    gateway.set_up(True)
    wait_for(lambda: Payment.objects.filter(status="charged").count() == PAYMENTS, timeout=90, what="every payment charged")
    assert circuit().state == "closed"
    assert transitions()[-2:] == [("open", "half_open"), ("half_open", "closed")]
    wait_for(lambda: JobExecution.objects.filter(task_name=CHARGE, state="succeeded").count() == PAYMENTS, timeout=30,
             what="every charge job recorded as succeeded")

    # Waiting cost no retries: the only retries spent are the calls the gateway refused.
    jobs = JobExecution.objects.filter(task_name=CHARGE)
    refused = gateway.stats()["charges_refused"]
    assert jobs.aggregate(total=Sum("retries"))["total"] == refused
    assert jobs.filter(circuit_waits__gte=2, retries=0).exists()  # waited through both cool-downs, no retry spent
    assert set(jobs.values_list("circuit", flat=True)) == {"payment-gateway"}

    run_detectors(["circuits"])
    finding.refresh_from_db()
    assert finding.status == "resolved"
