"""Incidents and notifications: held before they are sent, sent once, repeated, resolved once,
flaps damped; channels sent to in parallel, failures retried with back-off and recorded, a broken
channel turned off; the monitor's own staleness; /healthz and /metrics."""

import json
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.contrib.auth.models import User
from django.core import mail
from django.utils import timezone

from monitors.alerts import run_alerts
from monitors.heartbeats import WATCHED
from monitors.models import Finding, Incident, MonitorHeartbeat, Notification, NotificationChannel

pytestmark = pytest.mark.django_db(transaction=True)
T0 = timezone.now().replace(microsecond=0)


class Receiver(ThreadingHTTPServer):
    """A webhook receiver: records what it is sent; can be told to fail or to hang."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), ReceiverHandler)
        self.received, self.status, self.hang = [], 200, 0.0
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}/hook"


class ReceiverHandler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        time.sleep(self.server.hang)
        self.server.received.append(body)
        self.send_response(self.server.status)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.shutdown()


@pytest.fixture(autouse=True)
def healthy_monitor():
    for task in WATCHED:
        MonitorHeartbeat.objects.create(task=task, last_run_at=timezone.now() + timedelta(days=1))


def finding(minutes=0, **fields):
    values = {"fingerprint": "circuit_open:payment-gateway", "detector": "circuits", "kind": "circuit_open",
              "subject": "payment-gateway", "severity": "warning", "title": "Circuit payment-gateway is open: 4 jobs waiting",
              "explanation": "Calls failed.", "evidence": {"jobs_waiting": 4}, "count": 4,
              "first_seen": T0 + timedelta(minutes=minutes), "last_seen": T0 + timedelta(minutes=minutes)}
    return Finding.objects.create(**{**values, **fields})


def resolve(item, at):
    Finding.objects.filter(pk=item.pk).update(status="resolved", resolved_at=at)


def at(seconds):
    return T0 + timedelta(seconds=seconds)


def test_an_incident_is_notified_once_when_it_holds_and_once_when_it_is_over(receiver):
    NotificationChannel.objects.create(name="ops", kind="webhook", target=receiver.url)
    problem = finding()
    run_alerts(at(10))
    assert receiver.received == []  # not yet held for 30 s
    run_alerts(at(31))
    run_alerts(at(45))
    assert [item["event"] for item in receiver.received] == ["opened"]
    assert receiver.received[0]["evidence"] == {"jobs_waiting": 4} and receiver.received[0]["severity"] == "warning"

    resolve(problem, at(50))
    run_alerts(at(60))
    assert len(receiver.received) == 1  # the resolve must hold for 60 s
    run_alerts(at(111))
    run_alerts(at(120))
    assert [item["event"] for item in receiver.received] == ["opened", "resolved"]
    assert Incident.objects.get().state == "resolved"


def test_a_finding_that_is_over_before_it_held_is_never_notified(receiver):
    NotificationChannel.objects.create(name="ops", kind="webhook", target=receiver.url)
    problem = finding()
    run_alerts(at(5))
    resolve(problem, at(10))
    run_alerts(at(40))
    run_alerts(at(200))
    assert receiver.received == [] and Incident.objects.get().state == "dismissed"


def test_a_flap_continues_the_incident_instead_of_paging_again(receiver):
    NotificationChannel.objects.create(name="ops", kind="webhook", target=receiver.url)
    first = finding()
    run_alerts(at(31))
    resolve(first, at(40))
    run_alerts(at(45))  # resolving: holding its resolve
    finding(minutes=1)  # the same problem, back within the hold
    run_alerts(at(70))
    run_alerts(at(200))
    assert [item["event"] for item in receiver.received] == ["opened"]
    assert Incident.objects.get().state == "open"


def test_an_open_incident_is_repeated_after_the_interval_unless_acknowledged(receiver, settings):
    settings.JOBWATCH = {**settings.JOBWATCH, "ALERT_REPEAT_SECONDS": 3600}
    NotificationChannel.objects.create(name="ops", kind="webhook", target=receiver.url)
    finding()
    run_alerts(at(31))
    run_alerts(at(31 + 3600))
    assert [item["event"] for item in receiver.received] == ["opened", "repeat"]
    Incident.objects.update(acknowledged_at=at(3700), acknowledged_by="oncall")
    run_alerts(at(31 + 7300))
    assert len(receiver.received) == 2


def test_a_hanging_webhook_does_not_delay_email_and_its_failure_is_retried(receiver, settings):
    settings.JOBWATCH = {**settings.JOBWATCH, "CHANNEL_TIMEOUT": 2}
    NotificationChannel.objects.create(name="hook", kind="webhook", target=receiver.url)
    NotificationChannel.objects.create(name="mail", kind="email", target="oncall@example.com")
    receiver.hang = 4  # longer than the timeout
    finding(severity="critical")
    started = time.monotonic()
    outcome = run_alerts(at(31))
    assert outcome["delivered"]["mail"] == (1, 0) and outcome["delivered"]["hook"] == (0, 1)
    assert len(mail.outbox) == 1 and "payment-gateway" in mail.outbox[0].subject
    assert time.monotonic() - started < 3.5  # the email did not wait for the hook in turn

    hook = NotificationChannel.objects.get(name="hook")
    assert hook.consecutive_failures == 1 and "timed out" in hook.last_error and hook.next_attempt_at > at(31)
    pending = Notification.objects.get(channel=hook)
    assert pending.status == "pending" and pending.attempts == 1
    receiver.hang = 0
    run_alerts(at(35))  # within the back-off: not tried
    assert Notification.objects.get(channel=hook).attempts == 1
    run_alerts(at(31 + 11))
    assert Notification.objects.get(channel=hook).status == "sent" and len(mail.outbox) == 1


def test_a_channel_that_keeps_failing_is_turned_off_and_says_why(receiver, settings):
    settings.JOBWATCH = {**settings.JOBWATCH, "CHANNEL_MAX_FAILURES": 2}
    receiver.status = 500
    NotificationChannel.objects.create(name="hook", kind="webhook", target=receiver.url)
    finding()
    run_alerts(at(31))
    run_alerts(at(31 + 11))
    hook = NotificationChannel.objects.get()
    assert not hook.enabled and "2 failures in a row" in hook.disabled_reason
    assert Notification.objects.get().status == "abandoned"


def test_a_stale_monitor_is_a_finding_and_fails_healthz(client):
    MonitorHeartbeat.objects.filter(task="jobwatch.run_detectors").update(last_run_at=timezone.now() - timedelta(minutes=10))
    response = client.get("/jobwatch/healthz")
    assert response.status_code == 503 and "jobwatch.run_detectors" in response.json()["checks"]["monitor"]
    run_alerts()
    assert Finding.objects.get(kind="monitor_stale").subject == "jobwatch.run_detectors"
    MonitorHeartbeat.objects.update(last_run_at=timezone.now())
    assert client.get("/jobwatch/healthz").status_code == 200


def test_metrics_need_a_token_or_staff_and_parse_as_prometheus_text(client, settings):
    from prometheus_client.parser import text_string_to_metric_families

    from monitors import metric_histograms
    from monitors.models import TaskCounter

    for metric, value in (("succeeded", 3), ("failed", 1)):
        TaskCounter.objects.create(metric=metric, name="shop.charge", hostname="w@h", queue_name="payments",
                                   exception="ConnectionError" if metric == "failed" else "", value=value)
    bounds = metric_histograms.bounds("runtime")
    bucket, total = (metric_histograms.stored_metric("runtime", part, bounds) for part in ("bucket", "sum"))
    TaskCounter.objects.create(metric=bucket, name="shop.charge", hostname="w@h", queue_name="payments", le="+Inf", value=4)
    TaskCounter.objects.create(metric=bucket, name="shop.charge", hostname="w@h", queue_name="payments", le="0.1", value=3)
    TaskCounter.objects.create(metric=total, name="shop.charge", hostname="w@h", queue_name="payments", value=0.5)
    assert client.get("/jobwatch/metrics").status_code == 403
    settings.JOBWATCH = {**settings.JOBWATCH, "METRICS_TOKEN": "s3cret"}
    assert client.get("/jobwatch/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    response = client.get("/jobwatch/metrics", HTTP_AUTHORIZATION="Bearer s3cret")
    families = {family.name: family for family in text_string_to_metric_families(response.content.decode())}
    failed = families["celery_task_failed"].samples[0]
    assert failed.name == "celery_task_failed_total" and failed.value == 1
    assert failed.labels == {"name": "shop.charge", "hostname": "w@h", "queue_name": "payments", "exception": "ConnectionError"}
    runtime = {sample.name: sample.value for sample in families["celery_task_runtime"].samples if sample.labels.get("le") in (None, "+Inf")}
    assert runtime["celery_task_runtime_count"] == 4 and runtime["celery_task_runtime_sum"] == 0.5
    staff = User.objects.create_user("ops", is_staff=True)
    settings.JOBWATCH = {**settings.JOBWATCH, "METRICS_TOKEN": ""}
    client.force_login(staff)
    assert client.get("/jobwatch/metrics").status_code == 200


def test_pruning_keeps_the_history_within_its_retention():
    from monitors.models import ActionLog, JobExecution, OriginTally
    from monitors.retention import prune_history

    old, recent = timezone.now() - timedelta(days=40), timezone.now() - timedelta(days=1)
    for number, moment in enumerate((old, old, recent)):
        JobExecution.objects.create(task_id=f"j{number}", state="succeeded", enqueued_at=moment, updated_at=moment)
        OriginTally.objects.create(start=moment.replace(minute=0, second=0, microsecond=0) + timedelta(hours=number),
                                   resolution=3600, origin_kind="save", origin_receiver="shop.receivers.sync",
                                   task_name="shop.sync", jobs=1)
    ActionLog.objects.create(at=old, action="replay_jobs", outcome="succeeded")
    pruned = prune_history()
    assert pruned["jobs"] == 2 and list(JobExecution.objects.values_list("task_id", flat=True)) == ["j2"]
    assert pruned["origin_tallies"] == 2 and OriginTally.objects.get().start > old
    assert pruned["audit_log"] == 0  # kept a year


def test_acknowledge_and_snooze_from_the_dashboard_need_the_permission_and_are_audited(receiver):
    from django.contrib.auth.models import Permission
    from django.test import Client

    from monitors.models import ActionLog

    NotificationChannel.objects.create(name="ops", kind="webhook", target=receiver.url)
    finding()
    run_alerts(at(31))
    incident = Incident.objects.get()
    viewer, oncall = User.objects.create_user("viewer", is_staff=True), User.objects.create_user("oncall", is_staff=True)
    oncall.user_permissions.add(Permission.objects.get(codename="acknowledge_incident"))
    as_viewer, as_oncall = Client(), Client()
    as_viewer.force_login(viewer)
    as_oncall.force_login(oncall)
    assert b"Circuit payment-gateway is open" in as_viewer.get("/jobwatch/alerts/").content
    assert as_viewer.post(f"/jobwatch/alerts/{incident.pk}/acknowledge/").status_code == 403
    assert as_oncall.post(f"/jobwatch/alerts/{incident.pk}/acknowledge/", {"snooze": "4h"}).status_code == 302
    assert Incident.objects.get().snoozed_until is not None
    as_oncall.post(f"/jobwatch/alerts/{incident.pk}/acknowledge/")
    assert Incident.objects.get().acknowledged_by == "oncall"
    assert list(ActionLog.objects.order_by("pk").values_list("username", "outcome")) == [
        ("viewer", "refused"), ("oncall", "succeeded"), ("oncall", "succeeded")]


def test_alert_tasks_running_at_once_notify_once(receiver):
    NotificationChannel.objects.create(name="ops", kind="webhook", target=receiver.url)
    finding()
    run_alerts(at(5))  # the incident exists, pending
    start = threading.Barrier(4)

    def alert_task():
        from django.db import connection

        start.wait()
        try:
            run_alerts(at(31))
        finally:
            connection.close()

    runs = [threading.Thread(target=alert_task) for _ in range(4)]
    for run in runs:
        run.start()
    for run in runs:
        run.join()
    assert Notification.objects.count() == 1 and [item["event"] for item in receiver.received] == ["opened"]


def test_an_open_incident_that_grows_more_severe_is_notified_again(receiver):
    NotificationChannel.objects.create(name="ops", kind="webhook", target=receiver.url)
    problem = finding()
    run_alerts(at(31))
    Finding.objects.filter(pk=problem.pk).update(severity="critical")
    run_alerts(at(40))
    run_alerts(at(50))
    assert [(item["event"], item["severity"]) for item in receiver.received] == [("opened", "warning"), ("escalated", "critical")]
