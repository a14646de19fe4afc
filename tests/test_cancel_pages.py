"""Cancelling from the dashboard, the admin and the command line: the preview says what will be
done to each job (taken off its queue, revoked, terminated), the change is a POST with CSRF that
needs monitors.cancel_jobs, and the audit log and the job's page say who cancelled it and why.
(The workers' side is tests/test_cancel.py.) No broker answers here: the broker of these tests
has no such queue, so the queued job is revoked instead, and the page says so."""

from io import StringIO

import pytest
from django.contrib.auth.models import Permission, User
from django.core.management import CommandError, call_command
from django.test import Client

from monitors.models import ActionLog, JobExecution
from tests.brokers import staff_with
from tests.rows import job_row

pytestmark = [pytest.mark.django_db]


def job(task_id, **fields):
    return job_row(task_id, **{"task_name": "billing.sync_ledger", "queue": "ledger-none", **fields})


@pytest.fixture
def operator():
    client = Client()
    client.force_login(staff_with("cancel_jobs"))
    return client


def test_the_job_page_offers_cancel_and_the_preview_says_what_happens(operator):
    job("led-1", state="enqueued")
    job("led-2", state="started")
    page = operator.get("/jobwatch/jobs/led-1/").content.decode()
    assert 'action="/jobwatch/jobs/cancel/"' in page and "terminate it" not in page
    running = operator.get("/jobwatch/jobs/led-2/").content.decode()
    assert "terminate it (it is running)" in running

    preview = operator.post("/jobwatch/jobs/cancel/", {"id": ["led-1", "led-2"], "reason": "duplicate run"})
    text = preview.content.decode()
    assert preview.status_code == 200 and "Cancel 1 job?" in text and "1 waiting in a queue" in text
    assert "1 running job will go on running" in text
    assert JobExecution.objects.get(task_id="led-1").cancelled_at is None  # the preview changed nothing

    done = operator.post("/jobwatch/jobs/cancel/", {"id": ["led-1", "led-2"], "reason": "duplicate run", "confirmed": "yes"})
    entry = ActionLog.objects.get(action="cancel_jobs", dry_run=False)
    assert done.status_code == 302 and done["Location"] == f"/jobwatch/actions/{entry.pk}/"
    cancelled = JobExecution.objects.get(task_id="led-1")
    assert (cancelled.cancelled_by, cancelled.cancel_reason) == ("oncall (dashboard)", "duplicate run")
    assert JobExecution.objects.get(task_id="led-2").cancelled_at is None  # running, not terminated
    page = operator.get("/jobwatch/jobs/led-1/").content.decode()
    assert "Cancelled by oncall (dashboard)" in page and "duplicate run" in page
    assert 'action="/jobwatch/jobs/cancel/"' not in page


def test_cancel_needs_its_permission_and_csrf(operator):
    job("led-3", state="enqueued")
    viewer = Client()
    viewer.force_login(User.objects.create_user("viewer", is_staff=True))
    refused = viewer.post("/jobwatch/jobs/cancel/", {"id": "led-3", "confirmed": "yes"})
    assert refused.status_code == 403 and "monitors.cancel_jobs" in refused.content.decode()
    assert ActionLog.objects.filter(action="cancel_jobs", outcome="refused", username="viewer").exists()
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(User.objects.get(username="oncall"))
    assert strict.post("/jobwatch/jobs/cancel/", {"id": "led-3", "confirmed": "yes"}).status_code == 403
    assert operator.get("/jobwatch/jobs/cancel/").status_code == 405
    assert JobExecution.objects.get(task_id="led-3").cancelled_at is None


def test_the_admin_and_the_command_cancel_as_their_user(operator):
    # The admin's changelist needs the model's view permission too, as every admin page does.
    User.objects.get(username="oncall").user_permissions.add(Permission.objects.get(codename="view_jobexecution"))
    job("led-4", state="enqueued")
    job("led-5", state="received")
    pk = JobExecution.objects.get(task_id="led-4").pk
    form = {"action": "cancel", "_selected_action": [pk]}
    confirm = operator.post("/admin/monitors/jobexecution/", form)
    assert confirm.status_code == 200 and "waiting in a queue" in confirm.content.decode()
    operator.post("/admin/monitors/jobexecution/", {**form, "confirmed": "yes", "reason": "from the admin"})
    assert JobExecution.objects.get(task_id="led-4").cancel_reason == "from the admin"

    out = StringIO()
    call_command("jobwatch_cancel", id=["led-5"], reason="script", yes=True, user="oncall", stdout=out)
    assert "1 held by a worker (revoked)" in out.getvalue() and "Cancelled: 1 succeeded" in out.getvalue()
    assert JobExecution.objects.get(task_id="led-5").cancelled_by == "oncall (command)"
    User.objects.create_user("viewer", is_staff=True)
    with pytest.raises(CommandError, match="monitors.cancel_jobs"):
        call_command("jobwatch_cancel", id=["led-5"], yes=True, user="viewer")
