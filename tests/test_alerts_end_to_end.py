"""End to end, with a real worker running celery beat at Jobwatch's default intervals (sampling
15 s, detectors 30 s, alerts 10 s) and the demo payment gateway: take the gateway down and one
"opened" notification for the open circuit reaches a webhook, with the evidence, within 60 s of
the circuit opening; bring it back and one "resolved" follows; nothing in between."""

import time

import pytest
from django.contrib.auth.models import User
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from demo.gateway import start as start_gateway
from demo.models import Customer, Order, Payment
from monitors.models import CircuitEvent, NotificationChannel
from tests.test_alerts import Receiver
from tests.workers import WorkerProcess, database_url_for_workers, fresh_redis_url, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]
SUBJECT = "payment-gateway"


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.shutdown()


def events_about(receiver, subject):
    return [(item["event"], item) for item in receiver.received if item.get("subject") == subject]


def test_an_open_circuit_is_notified_once_within_a_minute_and_resolved_once(tmp_path, receiver):
    gateway = start_gateway(port=0, up=False)
    NotificationChannel.objects.create(name="ops hook", kind="webhook", target=receiver.url)
    env = {"DATABASE_URL": database_url_for_workers(), "CELERY_BROKER_URL": fresh_redis_url(14),
           "DEMO_GATEWAY_URL": gateway.url,
           # Only the resolve's hold is shortened (60 s by default), to keep the test short.
           "JOBWATCH_ALERT_RESOLVE_HOLD_SECONDS": "15"}
    try:
        with WorkerProcess(tmp_path / "worker.log", env=env, beat=True):
            order = Order.objects.create(customer=Customer.objects.create(name="A", email="a@example.com"), total_cents=1)
            for cents in range(8):
                Payment.objects.create(order=order, amount_cents=cents + 1)
            opened = wait_for(lambda: CircuitEvent.objects.filter(circuit=SUBJECT, to_state="open").order_by("at").first(),
                              timeout=60, what="the circuit to open")

            wait_for(lambda: events_about(receiver, SUBJECT), timeout=90, what="the opened notification")
            latency = time.time() - opened.at.timestamp()
            print(f"notified {latency:.1f} s after the circuit opened")
            [(event, payload)] = events_about(receiver, SUBJECT)
            assert event == "opened" and payload["kind"] == "circuit_open"
            assert payload["evidence"]["jobs_waiting"] >= 1 and "503" in payload["evidence"]["last_error"]
            assert latency < 60

            gateway.set_up(True)
            wait_for(lambda: len(events_about(receiver, SUBJECT)) >= 2, timeout=150, what="the resolved notification")
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
