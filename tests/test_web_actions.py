"""Replay, purge and restore from the dashboard and the admin: POST only, CSRF, the action's
permission (refusals audited), a preview before anything changes, and a read-only role that sees
everything and changes nothing."""

import pytest
import redis
from django.contrib.auth.models import Group, Permission, User
from django.test import Client
from django.utils import timezone

from dashboard.celery import app
from monitors.models import ActionLog, ArchivedMessage, JobExecution
from tests.workers import fresh_redis_url

pytestmark = [pytest.mark.django_db(transaction=True)]
QUEUE = "web-purge"


def user(name, *codenames, staff=True):
    account = User.objects.create_user(name, password="pw", is_staff=staff)
    for codename in codenames:
        account.user_permissions.add(Permission.objects.get(codename=codename))
    return account


@pytest.fixture
def failed_job():
    return JobExecution.objects.create(task_id="orig-1", task_name="demo.tasks.echo", state="failed", queue=QUEUE,
                                       args=[1], kwargs={}, payload_complete=True, updated_at=timezone.now(),
                                       enqueued_at=timezone.now())


@pytest.fixture
def broker():
    fresh_redis_url(14)  # the site's broker in the tests
    return redis.Redis.from_url("redis://127.0.0.1:6379/14")


def logged_in(account):
    client = Client()
    client.force_login(account)
    return client


def test_anonymous_visitors_are_sent_to_log_in_and_non_staff_are_refused(client, failed_job):
    for url in ("/jobwatch/archive/", "/jobwatch/actions/"):
        assert client.get(url).status_code == 302
    assert client.post("/jobwatch/jobs/replay/", {"id": "orig-1"}).status_code == 302
    outsider = logged_in(user("outsider", "replay_jobs", staff=False))
    assert outsider.post("/jobwatch/jobs/replay/", {"id": "orig-1"}).status_code == 403
    assert not ActionLog.objects.exists()  # stopped at the door, before any action


def test_no_get_changes_anything(failed_job):
    operator = logged_in(user("oncall", "replay_jobs", "purge_messages", "restore_messages"))
    assert operator.get("/jobwatch/jobs/replay/?id=orig-1&confirmed=yes").status_code == 405
    assert operator.get(f"/jobwatch/queues/{QUEUE}/purge/?everything=1&confirmed=yes").status_code == 405
    assert operator.get("/jobwatch/archive/restore/?archived=1&confirmed=yes").status_code == 405
    assert not ActionLog.objects.exists()


def test_a_post_without_the_csrf_token_is_refused(failed_job):
    client = Client(enforce_csrf_checks=True)
    client.force_login(user("oncall", "replay_jobs"))
    assert client.post("/jobwatch/jobs/replay/", {"id": "orig-1", "confirmed": "yes"}).status_code == 403
    assert not ActionLog.objects.exists()


@pytest.mark.parametrize("url,data", [
    ("/jobwatch/jobs/replay/", {"id": "orig-1"}),
    (f"/jobwatch/queues/{QUEUE}/purge/", {"everything": "1"}),
    ("/jobwatch/archive/restore/", {"archived": "1"}),
])
def test_staff_without_the_permission_and_the_read_only_role_are_refused_and_audited(url, data, failed_job, broker):
    viewer_role = Group.objects.create(name="jobwatch viewers")
    viewer_role.permissions.set(Permission.objects.filter(codename__startswith="view_", content_type__app_label="monitors"))
    viewer = user("viewer")
    viewer.groups.add(viewer_role)
    for account in (user("staff-only"), viewer):
        client = logged_in(account)
        assert client.get("/jobwatch/archive/").status_code == 200  # sees everything…
        assert client.post(url, {**data, "confirmed": "yes"}).status_code == 403  # …changes nothing
    refused = list(ActionLog.objects.values_list("username", "outcome"))
    assert refused == [("staff-only", "refused"), ("viewer", "refused")]


def test_replay_from_the_dashboard_previews_then_sends_once(failed_job, broker):
    operator = logged_in(user("oncall", "replay_jobs"))
    page = operator.post("/jobwatch/jobs/replay/", {"id": "orig-1"})
    assert page.status_code == 200 and b"Replay 1 job?" in page.content and b"will be replayed" in page.content
    assert broker.llen(QUEUE) == 0  # the preview sent nothing
    key = page.context["request_key"]

    done = operator.post("/jobwatch/jobs/replay/", {"id": "orig-1", "confirmed": "yes", "request_key": key})
    assert done.status_code == 302
    again = operator.post("/jobwatch/jobs/replay/", {"id": "orig-1", "confirmed": "yes", "request_key": key})  # double click
    assert again.status_code == 302
    assert broker.llen(QUEUE) == 1
    entry = ActionLog.objects.filter(dry_run=False).order_by("pk").last()
    assert operator.get(done["Location"]).status_code == 200 and entry.parameters["already_sent"] == 1


def test_purge_picked_messages_then_restore_them_from_the_archive(broker):
    operator = logged_in(user("oncall", "purge_messages", "restore_messages"))
    ids = [app.send_task("demo.tasks.echo", args=[n], queue=QUEUE).id for n in range(5)]
    picked = [f"id:{ids[1]}", f"id:{ids[3]}"]

    preview = operator.post(f"/jobwatch/queues/{QUEUE}/purge/", {"pick": picked})
    assert preview.status_code == 200 and preview.context["preview"].matched == 2 and broker.llen(QUEUE) == 5
    done = operator.post(f"/jobwatch/queues/{QUEUE}/purge/", {"pick": picked, "confirmed": "yes"})
    assert done.status_code == 302 and broker.llen(QUEUE) == 3
    archived = list(ArchivedMessage.objects.order_by("pk"))
    assert sorted(row.task_id for row in archived) == sorted([ids[1], ids[3]])
    assert ids[1].encode() in operator.get("/jobwatch/archive/").content

    restore = operator.post("/jobwatch/archive/restore/", {"archived": [row.pk for row in archived], "confirmed": "yes"})
    assert restore.status_code == 302 and broker.llen(QUEUE) == 5


def test_the_admin_replays_after_a_confirmation_page(failed_job, broker):
    operator = user("oncall", "replay_jobs", "view_jobexecution")
    client = logged_in(operator)
    selection = {"action": "replay", "_selected_action": [failed_job.pk]}
    page = client.post("/admin/monitors/jobexecution/", selection)
    assert page.status_code == 200 and b"Are you sure you want to replay 1" in page.content
    assert broker.llen(QUEUE) == 0
    client.post("/admin/monitors/jobexecution/", {**selection, "confirmed": "yes", "request_key": "k"})
    assert broker.llen(QUEUE) == 1
    assert ActionLog.objects.filter(surface="admin", dry_run=False).get().succeeded == 1


def test_a_job_argument_with_markup_is_escaped_on_the_confirmation_page(broker):
    JobExecution.objects.create(task_id="x", task_name="demo.tasks.echo", state="failed", args=["<script>alert(1)</script>"],
                                kwargs={}, payload_complete=True, enqueued_at=timezone.now(), updated_at=timezone.now())
    page = logged_in(user("oncall", "replay_jobs")).post("/jobwatch/jobs/replay/", {"id": "x"})
    assert b"<script>alert(1)</script>" not in page.content and b"&lt;script&gt;" in page.content


def test_discard_hides_failed_jobs_from_the_history_and_undo_brings_them_back(failed_job):
    from monitors.actions import discard_jobs
    from monitors.actions.selection import JobSelection

    JobExecution.objects.create(task_id="ok-1", task_name="demo.tasks.echo", state="succeeded", enqueued_at=timezone.now(),
                                updated_at=timezone.now())
    operator = user("oncall", "discard_jobs")
    result = discard_jobs(operator, JobSelection.from_filter({"task": "demo.tasks.echo"}), surface="command")
    assert result.log.succeeded == 1  # only the failed one
    page = logged_in(operator).get("/jobwatch/jobs/")
    assert b"orig-1" not in page.content and b"ok-1" in page.content
    discard_jobs(operator, JobSelection.from_filter({"task": "demo.tasks.echo"}), undo=True, surface="command")
    assert JobExecution.objects.get(task_id="orig-1").discarded_at is None
