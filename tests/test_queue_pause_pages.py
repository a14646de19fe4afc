"""Pausing a queue from the dashboard: confirmed first, POST with CSRF, its own permission, written
to the audit log; the queue's page, the Queues page and the Overview say who paused it and since
when; the backlog detector calls it paused (info, then a warning), not "nobody consumes it".
(The workers' side is tests/test_queue_pause.py.)"""

from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from monitors.detectors import backlog
from monitors.models import ActionLog, QueuePause, QueueSample
from tests.brokers import staff_with

pytestmark = [pytest.mark.django_db]


@pytest.fixture
def operator():
    client = Client()
    client.force_login(staff_with("pause_queues"))
    return client


@pytest.fixture
def stalled_queue():
    """invoices: 40 jobs waiting, nobody consuming it (as a paused queue looks to the broker)."""
    now = timezone.now()
    for seconds in range(0, 1500, 15):
        QueueSample.objects.create(queue="invoices", sampled_at=now - timedelta(seconds=seconds), depth=40 + seconds // 60,
                                   consumers=0, oldest_age=600.0 + seconds, arrivals_per_minute=3, drains_per_minute=0)
    return "invoices"


def test_pause_is_confirmed_audited_shown_everywhere_and_resumed(operator, stalled_queue):
    preview = operator.post("/jobwatch/queues/invoices/pause/", {"reason": "bad deploy"})
    page = preview.content.decode()
    assert preview.status_code == 200 and "Pause invoices on every worker?" in page and "Yes, pause invoices" in page
    assert "40 jobs waiting" in page and not QueuePause.objects.exists()

    done = operator.post("/jobwatch/queues/invoices/pause/", {"reason": "bad deploy", "confirmed": "yes"})
    assert done.status_code == 302 and done["Location"] == "/jobwatch/queues/invoices/"
    pause = QueuePause.objects.get(queue="invoices")
    entry = ActionLog.objects.get(action="pause_queue", dry_run=False)
    assert (pause.paused_by, pause.reason, pause.action_id, entry.outcome) == ("oncall", "bad deploy", entry.pk, "succeeded")

    queue_page = operator.get("/jobwatch/queues/invoices/").content.decode()
    assert "<strong>Paused</strong> by oncall" in queue_page and "bad deploy" in queue_page and "Resume…" in queue_page
    assert f"audit log #{entry.pk}" in queue_page
    listed = operator.get("/jobwatch/queues/").content.decode()
    assert "paused by oncall" in listed and "no consumer" not in listed
    overview = operator.get("/jobwatch/").content.decode()
    assert "Queues paused" in overview and "1 paused" in overview
    assert operator.get("/jobwatch/api/queues/invoices/").json()["pause"]["paused_by"] == "oncall"

    assert operator.post("/jobwatch/queues/invoices/resume/", {}).status_code == 200  # the confirmation
    assert QueuePause.objects.exists()
    operator.post("/jobwatch/queues/invoices/resume/", {"confirmed": "yes"})
    assert not QueuePause.objects.exists()
    resumed = ActionLog.objects.get(action="resume_queue", dry_run=False)
    assert resumed.parameters["paused_by"] == "oncall" and resumed.outcome == "succeeded"
    assert "Pause on every worker…" in operator.get("/jobwatch/queues/invoices/").content.decode()


def test_without_the_permission_it_is_refused_named_and_audited(stalled_queue):
    viewer = Client()
    viewer.force_login(User.objects.create_user("viewer", is_staff=True))
    response = viewer.post("/jobwatch/queues/invoices/pause/", {"confirmed": "yes"})
    assert response.status_code == 403 and "monitors.pause_queues" in response.content.decode()
    assert not QueuePause.objects.exists()
    assert ActionLog.objects.filter(action="pause_queue", outcome="refused", username="viewer").exists()


def test_a_pause_is_a_post_with_csrf(operator):
    assert operator.get("/jobwatch/queues/invoices/pause/").status_code == 405
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(User.objects.get(username="oncall"))
    assert strict.post("/jobwatch/queues/invoices/pause/", {"confirmed": "yes"}).status_code == 403
    assert not QueuePause.objects.exists()


def test_a_paused_queue_is_reported_as_paused_not_as_nobody_consuming_it(stalled_queue, settings):
    now = timezone.now()
    kinds = {problem.kind for problem in backlog.detect(now) if problem.subject == "invoices"}
    assert "queue_without_consumer" in kinds  # before the pause: nobody consumes it

    QueuePause.objects.create(queue="invoices", paused_at=now - timedelta(minutes=5), paused_by="oncall", reason="bad deploy")
    [paused] = [problem for problem in backlog.detect(now) if problem.subject == "invoices"]
    assert (paused.kind, paused.severity) == ("queue_paused", "info")
    assert "oncall" in paused.title and "bad deploy" in paused.explanation and paused.keys == ["queue:invoices"]

    QueuePause.objects.filter(queue="invoices").update(paused_at=now - timedelta(hours=2))
    [long_paused] = [problem for problem in backlog.detect(now) if problem.subject == "invoices"]
    assert long_paused.severity == "warning"


def test_the_command_pauses_and_resumes_as_the_user_it_names(operator):
    from io import StringIO

    from django.core.management import CommandError, call_command

    out = StringIO()
    call_command("jobwatch_queues", pause="invoices", reason="migration", user="oncall", stdout=out)
    assert "invoices paused (audit log #" in out.getvalue()
    assert QueuePause.objects.get(queue="invoices").reason == "migration"
    assert ActionLog.objects.get(action="pause_queue", dry_run=False).surface == "command"
    User.objects.create_user("viewer", is_staff=True)
    with pytest.raises(CommandError, match="monitors.pause_queues"):
        call_command("jobwatch_queues", resume="invoices", user="viewer")
    call_command("jobwatch_queues", resume="invoices", user="oncall", stdout=out)
    assert "invoices resumed" in out.getvalue() and not QueuePause.objects.exists()
    with pytest.raises(CommandError, match="--user"):
        call_command("jobwatch_queues", pause="invoices")


def test_the_admin_pauses_through_its_add_form_and_resumes_after_a_confirmation(operator):
    added = operator.post("/admin/monitors/queuepause/add/", {"queue": "invoices", "reason": "from the admin"})
    assert added.status_code == 302, added.content.decode()[:2000]
    pause = QueuePause.objects.get(queue="invoices")
    assert pause.paused_by == "oncall" and ActionLog.objects.get(action="pause_queue", dry_run=False).surface == "admin"

    form = {"action": "resume", "_selected_action": [pause.pk]}
    confirm = operator.post("/admin/monitors/queuepause/", form)
    assert confirm.status_code == 200 and "resume" in confirm.content.decode() and QueuePause.objects.exists()
    operator.post("/admin/monitors/queuepause/", {**form, "confirmed": "yes"})
    assert not QueuePause.objects.exists()
    assert ActionLog.objects.get(action="resume_queue", dry_run=False).surface == "admin"

    viewer = Client()
    viewer.force_login(User.objects.create_user("viewer", is_staff=True))
    assert viewer.get("/admin/monitors/queuepause/add/").status_code == 403
