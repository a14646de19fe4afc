"""When beat dies, the workers notice: Jobwatch's periodic tasks stop, and one worker raises the
stale monitor's alert in beat's place, notified through the channels once however many workers
watch; beat back, the incident resolves. A worker started before beat is given the stale rule's
grace; a healthy beat gives nothing. (End to end with real workers and a real beat, on Jobwatch's
own intervals shortened; the watch's rules without workers below.)"""

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from monitors.alerts import watchdog
from monitors.heartbeats import BEAT, WATCHED
from monitors.models import Finding, JobExecution, MonitorHeartbeat, NotificationChannel
from tests.test_alerts import Receiver
from tests.workers import WorkerProcess, database_url_for_workers, fresh_redis_url, wait_for


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.shutdown()


def env():
    return {
        "DATABASE_URL": database_url_for_workers(), "CELERY_BROKER_URL": fresh_redis_url(11),
        # Jobwatch's own schedule every 2–3 s: stale after 3 intervals (9 s), watched every 2 s.
        "JOBWATCH_TEST_ALERT_INTERVAL": "2", "JOBWATCH_TEST_DETECT_INTERVAL": "3", "JOBWATCH_TEST_SAMPLE_INTERVAL": "2",
        "JOBWATCH_TEST_WATCHDOG_SECONDS": "2", "JOBWATCH_ALERT_HOLD_SECONDS": "2", "JOBWATCH_ALERT_RESOLVE_HOLD_SECONDS": "2",
        # A periodic run is missed 3 s after it was due.
        "JOBWATCH_THRESHOLDS": json.dumps({"PERIODIC_GRACE_SECONDS": 3}),
    }


def monitor_events(receiver):
    """The events of the incident the stale monitor opened (its lead may change as its findings
    end one by one: the missed runs can outlast the stale monitor by a detector pass)."""
    opened = [item["incident"] for item in receiver.received if item.get("kind") == "monitor_stale"]
    return [item["event"] for item in receiver.received if opened and item["incident"] == opened[0]]


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_beat_stopped_is_paged_by_the_workers_once_and_resolved_when_it_is_back(tmp_path, receiver):
    NotificationChannel.objects.create(name="ops hook", kind="webhook", target=receiver.url, min_severity="warning")
    with WorkerProcess(tmp_path / "beat.log", env=env(), beat=True, name="withbeat"):
        wait_for(lambda: MonitorHeartbeat.objects.filter(task__in=list(WATCHED)).count() == len(WATCHED), timeout=60,
                 what="Jobwatch's periodic tasks to run")
        assert not MonitorHeartbeat.objects.filter(task=watchdog.WATCHDOG).exists()  # no turn was needed
    # Each job beat sent names its entry.
    assert JobExecution.objects.filter(origin_entry="jobwatch.send_alerts", origin_kind="beat").exists()
    assert not Finding.objects.filter(kind="monitor_stale").exists()  # beat ran: nothing to say

    # Beat is gone; two workers run on.
    with WorkerProcess(tmp_path / "one.log", env=env(), name="one"), WorkerProcess(tmp_path / "two.log", env=env(), name="two"):
        wait_for(lambda: "opened" in monitor_events(receiver), timeout=60, what="the stale monitor's page")
        finding = Finding.objects.filter(kind="monitor_stale", status="open").first()
        assert finding is not None and "watch" in finding.explanation
        turn = MonitorHeartbeat.objects.get(task=watchdog.WATCHDOG)
        assert turn.last_error.startswith("turn taken by ")
        wait_for(lambda: MonitorHeartbeat.objects.get(task=watchdog.WATCHDOG).runs >= 3, timeout=30,
                 what="more turns of the watch")
        assert monitor_events(receiver) == ["opened"]  # one page, whichever worker looked
        # Each of beat's entries missed its runs, and says so — in the stale monitor's incident.
        missed = wait_for(lambda: Finding.objects.filter(kind="periodic_missed", subject="jobwatch.sample_queues",
                                                         status="open").exclude(incident=None).first(),
                          timeout=30, what="the missed runs of jobwatch.sample_queues")
        assert missed.incident_id == Finding.objects.get(kind="monitor_stale", subject="jobwatch.send_alerts",
                                                         status="open").incident_id
        assert not missed.evidence["beat_running"]

        # Beat back (a worker with -B): the monitor runs again and the incident resolves.
        with WorkerProcess(tmp_path / "beat2.log", env=env(), beat=True, name="beatagain"):
            wait_for(lambda: monitor_events(receiver)[-1:] == ["resolved"], timeout=90, what="the resolved notification")
    assert monitor_events(receiver) == ["opened", "resolved"]
    assert len(receiver.received) == 2  # beat's death was one problem, paged once
    payload = next(item for item in receiver.received if item.get("kind") == "monitor_stale")
    assert json.dumps(payload)  # the webhook's JSON as sent


# -- the watch's rules, without workers ----------------------------------------------------------


@pytest.mark.django_db
def test_a_worker_waits_out_the_grace_and_a_running_monitor_needs_nothing():
    now = timezone.now()
    assert watchdog.keep_watch("w@1", worker_started_at=now - timedelta(seconds=5), now=now) == "too early"
    for task in WATCHED:
        MonitorHeartbeat.objects.create(task=task, last_run_at=now - timedelta(seconds=1), runs=1)
    assert watchdog.keep_watch("w@1", worker_started_at=now - timedelta(hours=1), now=now) == "monitor running"
    assert not Finding.objects.exists()


@pytest.mark.django_db
def test_one_worker_per_turn_raises_the_stale_monitor_in_beats_place():
    now = timezone.now()
    MonitorHeartbeat.objects.create(task=BEAT, last_run_at=now - timedelta(hours=2), runs=1)
    for task in WATCHED:
        MonitorHeartbeat.objects.create(task=task, last_run_at=now - timedelta(hours=1), runs=1)
    started = now - timedelta(hours=1)
    assert watchdog.keep_watch("w@1", started, now=now) == "alerted"
    assert watchdog.keep_watch("w@2", started, now=now + timedelta(seconds=1)) == "another worker's turn"
    assert watchdog.keep_watch("w@2", started, now=now + timedelta(seconds=31)) == "alerted"
    stale = Finding.objects.filter(kind="monitor_stale", status="open")
    # Every watched task, the alert task itself among them: nothing is running it.
    assert {finding.subject for finding in stale} == set(WATCHED)
    assert all("w@2's watch: beat itself" in finding.explanation for finding in stale)  # the latest look's
