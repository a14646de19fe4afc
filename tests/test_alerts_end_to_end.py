"""End to end, with a real worker running celery beat at Jobwatch's default intervals (sampling
15 s, detectors 30 s, alerts 10 s), notifications to a webhook receiver in the test:

- the demo payment gateway goes down: one "opened" notification for the open circuit, with the
  evidence, within 60 s of the circuit opening; back up: one "resolved"; nothing in between;
- a backlog (a queue nobody consumes, over its length threshold) and an orphan wave (jobs of
  rolled-back orders): one "opened" and one "resolved" each.

Only thresholds are shortened (how long a queue must be too long, how long orphans stay in the
window, the resolve's hold), never the intervals."""

import json
import time

import pytest
import redis
from django.contrib.auth.models import User
from django.db import transaction
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from demo.gateway import start as start_gateway
from demo.models import Customer, Order, Payment
from monitors.models import CircuitEvent, Finding, Incident, NotificationChannel
from tests.brokers import celery_app
from tests.test_alerts import Receiver
from tests.workers import REDIS_URL, WorkerProcess, database_url_for_workers, fresh_redis_url, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]
SUBJECT = "payment-gateway"


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.shutdown()


def worker_env(gateway_url="http://127.0.0.1:9"):
    return {
        "DATABASE_URL": database_url_for_workers(), "CELERY_BROKER_URL": fresh_redis_url(14), "DEMO_GATEWAY_URL": gateway_url,
        "JOBWATCH_ALERT_RESOLVE_HOLD_SECONDS": "15",
        "JOBWATCH_THRESHOLDS": json.dumps({"QUEUE_LENGTH": 20, "QUEUE_LENGTH_SECONDS": 30, "OLDEST_AGE_WARNING": 3600,
                                           "OLDEST_AGE_CRITICAL": 7200, "ORPHAN_WINDOW_SECONDS": 75}),
    }


def events_about(receiver, subject):
    return [(item["event"], item) for item in receiver.received if item.get("subject") == subject]


def what_happened(receiver):
    """For a wait that timed out: what was notified, and what the monitor holds open."""
    from monitors.models import QueueSample

    sent = [(item.get("event"), item.get("kind"), item.get("subject")) for item in receiver.received]
    findings = list(Finding.objects.filter(status="open").values_list("kind", "subject", "first_seen"))
    incidents = list(Incident.objects.values_list("subject", "state", "opened_at", "notified_at"))
    samples = list(QueueSample.objects.order_by("-sampled_at").values_list("queue", "sampled_at", "depth", "consumers", "error")[:6])
    return f"notified {sent}; open findings {findings}; incidents {incidents}; newest samples {samples}"


def test_an_open_circuit_is_notified_once_within_a_minute_and_resolved_once(tmp_path, receiver):
    gateway = start_gateway(port=0, up=False)
    NotificationChannel.objects.create(name="ops hook", kind="webhook", target=receiver.url)
    try:
        with WorkerProcess(tmp_path / "worker.log", env=worker_env(gateway.url), beat=True):
            order = Order.objects.create(customer=Customer.objects.create(name="A", email="a@example.com"), total_cents=1)
            for cents in range(8):
                Payment.objects.create(order=order, amount_cents=cents + 1)
            opened = wait_for(lambda: CircuitEvent.objects.filter(circuit=SUBJECT, to_state="open").order_by("at").first(),
                              timeout=60, what="the circuit to open")

            wait_for(lambda: events_about(receiver, SUBJECT), timeout=90, what="the opened notification",
                     explain=lambda: what_happened(receiver))
            latency = time.time() - opened.at.timestamp()
            print(f"notified {latency:.1f} s after the circuit opened")
            [(event, payload)] = events_about(receiver, SUBJECT)
            assert event == "opened" and payload["kind"] == "circuit_open"
            assert payload["evidence"]["jobs_waiting"] >= 1 and "503" in payload["evidence"]["last_error"]
            assert latency < 60

            gateway.set_up(True)
            wait_for(lambda: len(events_about(receiver, SUBJECT)) >= 2, timeout=150, what="the resolved notification",
                     explain=lambda: what_happened(receiver))
            time.sleep(12)  # another alert run or more: still nothing new
            assert [event for event, _ in events_about(receiver, SUBJECT)] == ["opened", "resolved"]

            # The recorder's counters, as Prometheus reads them: every charge succeeded once.
            wait_for(lambda: Payment.objects.filter(status="charged").count() == 8, timeout=60, what="every charge")
            time.sleep(1.5)  # the workers' last flush
            client = Client()
            client.force_login(User.objects.create_user("ops", is_staff=True))
            text = client.get("/jobwatch/metrics").content.decode()
            samples = [sample for family in text_string_to_metric_families(text) for sample in family.samples]
            succeeded = sum(sample.value for sample in samples if sample.name == "celery_task_succeeded_total"
                            and sample.labels["name"] == "demo.tasks.charge_payment")
            assert succeeded == 8
            assert any(sample.name == "jobwatch_circuit_state" and sample.labels == {"circuit": SUBJECT, "state": "closed"}
                       and sample.value == 1 for sample in samples)
    finally:
        gateway.stop()


def test_a_backlog_is_notified_once_and_resolved_once(tmp_path, receiver):
    NotificationChannel.objects.create(name="ops hook", kind="webhook", target=receiver.url)
    with WorkerProcess(tmp_path / "worker.log", env=worker_env(), beat=True):
        app = celery_app(f"{REDIS_URL}/14")  # the worker's broker (not flushed: it is running)
        started = time.time()
        for _ in range(40):
            app.send_task("demo.tasks.noop", queue="reports")  # nobody consumes "reports"
        wait_for(lambda: events_about(receiver, "reports"), timeout=120, what="the backlog's notification",
                 explain=lambda: what_happened(receiver))
        print(f"backlog notified {time.time() - started:.1f} s after it began")
        # Nobody consumes it, so it is too long: one problem, one incident, named after its cause.
        wait_for(lambda: Finding.objects.filter(kind="queue_too_long", status="open").exists(), timeout=90,
                 what="the queue to be too long for its threshold")

        redis.Redis.from_url(f"{REDIS_URL}/14").delete("reports")  # drained
        wait_for(lambda: len(events_about(receiver, "reports")) >= 2, timeout=150, what="the backlog's resolve",
                 explain=lambda: what_happened(receiver))
        time.sleep(12)
    assert [(event, item["kind"]) for event, item in events_about(receiver, "reports")] == [
        ("opened", "queue_without_consumer"), ("resolved", "queue_without_consumer")]
    [incident] = Incident.objects.filter(subject="reports")
    assert set(incident.findings.values_list("kind", flat=True)) >= {"queue_too_long", "queue_without_consumer"}


def test_an_orphan_wave_is_notified_once_and_resolved_once(tmp_path, receiver):
    NotificationChannel.objects.create(name="ops hook", kind="webhook", target=receiver.url)
    subject = "demo.tasks.reserve_inventory:rolled_back"
    with WorkerProcess(tmp_path / "worker.log", env=worker_env(), beat=True):
        customer = Customer.objects.create(name="O", email="o@example.com")
        started = time.time()
        for _ in range(6):
            with pytest.raises(RuntimeError), transaction.atomic():
                Order.objects.create(customer=customer, total_cents=5)  # its inventory job is enqueued here…
                raise RuntimeError("card declined")  # …and the order rolled back
        wait_for(lambda: events_about(receiver, subject), timeout=150, what="the orphan wave's notification",
                 explain=lambda: what_happened(receiver))
        print(f"orphan wave notified {time.time() - started:.1f} s after it began (10 s of it: the commit grace)")
        [(event, payload)] = events_about(receiver, subject)
        assert event == "opened" and payload["count"] == 6 and payload["evidence"]["cause"] == "rolled_back"
        wait_for(lambda: len(events_about(receiver, subject)) >= 2, timeout=180, what="the wave to leave the window",
                 explain=lambda: what_happened(receiver))
        time.sleep(12)
    assert [event for event, _ in events_about(receiver, subject)] == ["opened", "resolved"]
