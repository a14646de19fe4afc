"""One problem, one incident: findings that share a cause are grouped, the incident is named
after its likeliest cause, notified once, escalated once, resolved once all its evidence is over;
two problems that only share a symptom stay two. A fresh start opens nothing."""

from datetime import timedelta

import pytest
from django.utils import timezone

from monitors.alerts import run_alerts
from monitors.heartbeats import BEAT, WATCHED, beat_started, stale_tasks
from monitors.models import Finding, Incident, MonitorHeartbeat, Notification, NotificationChannel
from tests.test_alerts import Receiver

pytestmark = pytest.mark.django_db(transaction=True)
T0 = timezone.now().replace(microsecond=0)


def at(seconds):
    return T0 + timedelta(seconds=seconds)


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.shutdown()


@pytest.fixture
def hook(receiver):
    return NotificationChannel.objects.create(name="ops", kind="webhook", target=receiver.url)


@pytest.fixture(autouse=True)
def healthy_monitor():
    for task in WATCHED:
        MonitorHeartbeat.objects.create(task=task, last_run_at=timezone.now() + timedelta(days=1))


def finding(kind, subject, severity="warning", seconds=0, keys=(), links=(), count=1, detector="test"):
    return Finding.objects.create(
        fingerprint=f"{kind}:{subject}", detector=detector, kind=kind, subject=subject, severity=severity,
        title=f"{kind} {subject}", explanation="…", fix=f"fix {kind}", evidence={}, count=count,
        keys=list(keys), links=list(links), first_seen=at(seconds), last_seen=at(seconds))


def resolve(*findings, seconds):
    Finding.objects.filter(pk__in=[f.pk for f in findings]).update(status="resolved", resolved_at=at(seconds))


def events(receiver):
    return [(item["event"], item["kind"], item["subject"]) for item in receiver.received]


def live_incidents():
    return Incident.objects.exclude(state__in=[Incident.State.MERGED, Incident.State.DISMISSED])


def test_it_groups_a_service_outage_into_one_incident_named_after_the_circuit(hook, receiver):
    rate = finding("failure_rate", "shop.charge", "critical", keys=["task:shop.charge"], count=40)
    circuit = finding("circuit_open", "payments-api", "critical", keys=["service:payments-api"],
                      links=["task:shop.charge", "queue:payments"], count=25)
    age = finding("queue_oldest_age", "payments", keys=["queue:payments"], count=25)
    run_alerts(at(5))
    run_alerts(at(31))
    run_alerts(at(45))
    incident = live_incidents().get()
    assert incident.finding_id == circuit.pk and incident.title == "circuit_open payments-api"
    assert incident.severity == "critical" and incident.fix == "fix circuit_open" and incident.impact == 40
    assert set(incident.findings.values_list("pk", flat=True)) == {rate.pk, circuit.pk, age.pk}
    assert events(receiver) == [("opened", "circuit_open", "payments-api")]
    assert {item["kind"] for item in receiver.received[0]["findings"]} == {"circuit_open", "failure_rate", "queue_oldest_age"}

    resolve(circuit, age, seconds=50)
    run_alerts(at(200))
    assert events(receiver) == [("opened", "circuit_open", "payments-api")]  # the failure rate is still high
    assert live_incidents().get().title == "circuit_open payments-api"  # still named after its cause
    resolve(rate, seconds=210)
    run_alerts(at(220))
    run_alerts(at(300))
    assert events(receiver) == [("opened", "circuit_open", "payments-api"), ("resolved", "circuit_open", "payments-api")]


def test_it_groups_rolled_back_orphans_with_the_failures_and_the_smell_that_explain_them(hook, receiver):
    finding("enqueue_in_transaction", "shop.receivers.reserve:shop.reserve", "info",
            keys=["receiver:shop.receivers.reserve", "task:shop.reserve"])
    rate = finding("failure_rate", "shop.reserve", "critical", seconds=30, keys=["task:shop.reserve"], count=12)
    orphans = finding("orphaned_jobs", "shop.reserve:rolled_back", seconds=30, keys=["task:shop.reserve"],
                      links=["receiver:shop.receivers.reserve"], count=12)
    for moment in (5, 31, 40, 61, 75):
        run_alerts(at(moment))
    incident = live_incidents().get()
    assert incident.finding_id == orphans.pk and incident.severity == "critical"
    assert incident.findings.count() == 3 and rate.pk in incident.findings.values_list("pk", flat=True)
    # The smell alone was info (no page); the orphans made it a warning, the failures critical:
    # the channel hears of it once, named after its cause.
    assert events(receiver) == [("opened", "orphaned_jobs", "shop.reserve:rolled_back")]


def test_it_groups_a_save_storm_with_its_smells(hook, receiver):
    storm = finding("fanout_storm", "shop.Customer", keys=["saves:shop.Customer", "receiver:shop.r.sync", "receiver:shop.r.index"],
                    links=["task:shop.sync", "task:shop.index", "queue:celery"], count=1200)
    finding("trivial_save_enqueues", "shop.Customer:shop.r.sync", "info", keys=["saves:shop.Customer", "receiver:shop.r.sync"])
    finding("duplicate_enqueues", "shop.index", "info", keys=["task:shop.index"], links=["receiver:shop.r.index"])
    finding("bulk_loop", "shop.Customer:POST /import", "info", seconds=30, keys=["saves:shop.Customer"], links=["receiver:shop.r.sync"])
    finding("queue_growing", "celery", seconds=30, keys=["queue:celery"])
    for moment in (5, 31, 45):
        run_alerts(at(moment))
    incident = live_incidents().get()
    assert incident.finding_id == storm.pk and incident.findings.count() == 5
    assert events(receiver) == [("opened", "fanout_storm", "shop.Customer")]


def test_two_outages_that_share_only_a_queue_stay_two_incidents(hook, receiver):
    finding("service_failing", "maps.example:443", "critical", keys=["service:maps.example:443"],
            links=["task:shop.geocode", "queue:celery"])
    finding("service_failing", "mail.example:25", "critical", keys=["service:mail.example:25"],
            links=["task:shop.mail", "queue:celery"])
    finding("queue_oldest_age", "celery", keys=["queue:celery"])
    for moment in (5, 31):
        run_alerts(at(moment))
    assert sorted(live_incidents().values_list("subject", flat=True)) == ["mail.example:25", "maps.example:443"]
    assert sorted(subject for _, _, subject in events(receiver)) == ["mail.example:25", "maps.example:443"]


def test_a_symptom_waits_a_detector_pass_for_its_cause_so_that_the_page_names_the_cause(hook, receiver):
    finding("failure_rate", "shop.sync", keys=["task:shop.sync"], count=30)
    run_alerts(at(31))
    assert receiver.received == []  # held: the detectors run again within 35 s
    finding("service_failing", "crm.example:443", seconds=32, keys=["service:crm.example:443"], links=["task:shop.sync"], count=30)
    run_alerts(at(40))
    run_alerts(at(80))
    assert events(receiver) == [("opened", "service_failing", "crm.example:443")]


def test_a_cause_found_after_its_symptom_was_paged_takes_the_lead_without_a_second_page(hook, receiver):
    rate = finding("failure_rate", "shop.sync", keys=["task:shop.sync"], count=30)
    run_alerts(at(36))
    assert events(receiver) == [("opened", "failure_rate", "shop.sync")]
    service = finding("service_failing", "crm.example:443", seconds=40, keys=["service:crm.example:443"],
                      links=["task:shop.sync"], count=30)
    run_alerts(at(45))
    run_alerts(at(80))
    incident = live_incidents().get()
    assert incident.finding_id == service.pk and incident.title == "service_failing crm.example:443"
    assert set(incident.findings.values_list("pk", flat=True)) == {rate.pk, service.pk}
    assert len(receiver.received) == 1


def test_a_finding_that_bridges_two_pending_incidents_merges_them(hook, receiver):
    rate = finding("failure_rate", "shop.sync", keys=["task:shop.sync"])
    age = finding("queue_oldest_age", "crm", keys=["queue:crm"])
    run_alerts(at(2))
    assert live_incidents().count() == 2
    finding("circuit_open", "crm", seconds=5, keys=["service:crm"], links=["task:shop.sync", "queue:crm"])
    run_alerts(at(8))
    run_alerts(at(31))
    keeper = live_incidents().get()
    assert keeper.kind == "circuit_open" and keeper.findings.count() == 3
    merged = Incident.objects.get(state=Incident.State.MERGED)
    assert merged.merged_into_id == keeper.pk and {rate.pk, age.pk} <= set(keeper.findings.values_list("pk", flat=True))
    assert len(receiver.received) == 1


def test_info_is_shown_but_not_paged_and_a_channel_first_reached_by_an_escalation_hears_it_opened(hook, receiver):
    smell = finding("duplicate_enqueues", "shop.index", "info", keys=["task:shop.index"])
    run_alerts(at(31))
    run_alerts(at(45))
    assert live_incidents().get().state == "open" and receiver.received == []
    Finding.objects.filter(pk=smell.pk).update(severity="warning")
    run_alerts(at(60))
    run_alerts(at(70))
    assert [(item["event"], item["severity"]) for item in receiver.received] == [("opened", "warning")]
    Finding.objects.filter(pk=smell.pk).update(severity="critical")
    run_alerts(at(80))
    assert [(item["event"], item["severity"]) for item in receiver.received] == [("opened", "warning"), ("escalated", "critical")]


def test_each_channel_takes_its_minimum_severity(receiver):
    pager = NotificationChannel.objects.create(name="pager", kind="webhook", target=receiver.url, min_severity="critical")
    finding("queue_too_long", "reports", keys=["queue:reports"])
    run_alerts(at(31))
    assert not Notification.objects.filter(channel=pager).exists()
    finding("queue_without_consumer", "reports", "critical", seconds=35, keys=["queue:reports"])
    run_alerts(at(40))
    assert list(Notification.objects.filter(channel=pager).values_list("event", flat=True)) == ["opened"]


def test_a_fresh_start_opens_nothing_and_a_dead_beat_is_stale_after_its_grace():
    MonitorHeartbeat.objects.all().delete()
    now = timezone.now()
    # The alert task's first run, before any other periodic task ran: nothing is stale yet.
    run_alerts(now)
    assert not Finding.objects.exists() and not Incident.objects.exists()
    # An observer (the banner, /healthz) with nothing ever run: the monitor is not running.
    assert {task for task, _, _ in stale_tasks(now)} == set(WATCHED)

    beat_started()
    started = MonitorHeartbeat.objects.get(task=BEAT).last_run_at
    assert stale_tasks(started + timedelta(seconds=20)) == []  # beat has just started: within its grace
    assert {task for task, _, _ in stale_tasks(started + timedelta(seconds=200))} == set(WATCHED)

    # A restarted beat gives tasks that last ran long ago a new grace, not an outage.
    for task in WATCHED:
        MonitorHeartbeat.objects.create(task=task, last_run_at=started - timedelta(hours=2), first_run_at=started - timedelta(days=1))
    beat_started()
    restarted = MonitorHeartbeat.objects.get(task=BEAT).last_run_at
    assert stale_tasks(restarted + timedelta(seconds=20)) == []
    run_alerts(restarted + timedelta(seconds=200))
    assert Finding.objects.filter(kind="monitor_stale").count() == 2  # sampling and detection: beat died again
    assert live_incidents().count() == 1


def test_metrics_count_active_incidents_by_severity(hook, client, settings):
    from prometheus_client.parser import text_string_to_metric_families

    finding("circuit_open", "crm", "critical", keys=["service:crm"], links=["task:shop.sync"])
    finding("failure_rate", "shop.sync", keys=["task:shop.sync"])
    finding("duplicate_enqueues", "shop.index", "info", keys=["task:shop.index"])
    run_alerts(at(5))
    settings.JOBWATCH = {**settings.JOBWATCH, "METRICS_TOKEN": "s3cret"}
    text = client.get("/jobwatch/metrics", HTTP_AUTHORIZATION="Bearer s3cret").content.decode()
    [family] = [family for family in text_string_to_metric_families(text) if family.name == "jobwatch_active_incidents"]
    assert {sample.labels["severity"]: sample.value for sample in family.samples} == {"critical": 1, "warning": 0, "info": 1}


def test_a_problem_that_is_over_resolves_and_the_smells_that_came_with_it_go_on_unpaged(hook, receiver):
    queue = finding("queue_without_consumer", "reports", "critical", keys=["queue:reports"], links=["task:shop.noop"], count=40)
    smell = finding("duplicate_enqueues", "shop.noop", "info", keys=["task:shop.noop"], count=39)
    run_alerts(at(31))
    assert events(receiver) == [("opened", "queue_without_consumer", "reports")]
    resolve(queue, seconds=60)
    run_alerts(at(70))
    run_alerts(at(140))
    assert [event for event, _, _ in events(receiver)] == ["opened", "resolved"]
    smells = Incident.objects.get(state__in=Incident.ACTIVE)
    assert smells.kind == "duplicate_enqueues" and smells.severity == "info"
    assert list(smells.findings.values_list("pk", flat=True)) == [smell.pk]
