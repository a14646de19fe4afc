"""Run now: an entry's task sent once, outside its schedule, with the arguments the schedule holds
(the real ones, not the redacted ones pages show), to its queue, recorded among the entry's runs
as a manual one, which the periodic detector leaves out of the schedule's reckoning. A POST with
CSRF, previewed first, its own permission (refused → 403 and a refused row), audited; from the
page and from `manage.py jobwatch_periodic --run`."""

import base64
import json
from datetime import timedelta
from io import StringIO
from urllib.parse import urlencode

import pytest
import redis
from celery import current_app
from django.conf import settings
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone

from monitors.detectors import periodic
from monitors.models import ActionLog, JobExecution
from tests.brokers import staff_with
from tests.rows import job_row

pytestmark = [pytest.mark.django_db(transaction=True)]  # the recorder writes on its own connection

ENTRY = "partner sync"
QUEUE = "run-now-test"


@pytest.fixture
def schedule(monkeypatch):
    monkeypatch.setitem(current_app.conf.beat_schedule, ENTRY, {
        "task": "demo.tasks.call_partner", "schedule": 600.0,
        "args": ["https://partner.example/api", {"n": 1}], "kwargs": {"api_token": "s3cret"}, "options": {"queue": QUEUE}})
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    broker.delete(QUEUE)
    yield broker
    broker.delete(QUEUE)


def sent_messages(broker):
    return [json.loads(raw) for raw in broker.lrange(QUEUE, 0, -1)]


def test_run_now_sends_the_real_arguments_once_and_files_the_run_as_manual(client, schedule, flush_recorder):
    operator = staff_with("run_periodic_tasks")
    client.force_login(operator)
    preview = client.post("/jobwatch/periodic/run/", {"name": ENTRY})
    assert preview.status_code == 200 and b"Yes, run partner sync now" in preview.content
    assert b"s3cret" not in preview.content and sent_messages(schedule) == []  # a preview sends nothing

    done = client.post("/jobwatch/periodic/run/", {"name": ENTRY, "confirmed": "yes"})
    assert done.status_code == 302 and done["Location"] == f"/jobwatch/periodic/entry/?{urlencode({'name': ENTRY})}"
    [message] = sent_messages(schedule)
    args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
    assert kwargs == {"api_token": "s3cret"} and args == ["https://partner.example/api", {"n": 1}]
    assert message["headers"]["periodic_task_name"] == ENTRY

    log = ActionLog.objects.get(action="run_periodic_task", dry_run=False)
    assert (log.outcome, log.username, log.target) == ("succeeded", operator.username, ENTRY)
    flush_recorder()
    job = JobExecution.objects.get(task_id=log.parameters["task_id"])
    assert (job.origin_entry, job.origin_kind, job.queue) == (ENTRY, "manual", QUEUE)
    assert job.kwargs == {"api_token": "[redacted]"}  # the record redacts as always
    page = client.get(f"/jobwatch/periodic/entry/?{urlencode({'name': ENTRY})}")
    assert b"run by hand" in page.content and b"Run now" in page.content


def test_run_now_needs_its_permission_csrf_and_a_known_entry(client, schedule):
    client.force_login(staff_with())
    refused = client.post("/jobwatch/periodic/run/", {"name": ENTRY, "confirmed": "yes"})
    assert refused.status_code == 403 and b"monitors.run_periodic_tasks" in refused.content
    assert ActionLog.objects.get(action="run_periodic_task").outcome == "refused"
    assert sent_messages(schedule) == []

    strict = Client(enforce_csrf_checks=True)
    strict.force_login(staff_with("run_periodic_tasks", username="oncall2"))
    assert strict.post("/jobwatch/periodic/run/", {"name": ENTRY, "confirmed": "yes"}).status_code == 403
    assert client.get("/jobwatch/periodic/run/").status_code == 405

    client.force_login(staff_with("run_periodic_tasks", username="oncall3"))
    assert client.post("/jobwatch/periodic/run/", {"name": "no such entry", "confirmed": "yes"}).status_code == 400
    assert client.post("/jobwatch/periodic/run/", {"name": ""}).status_code == 400
    assert sent_messages(schedule) == []


def test_the_command_runs_an_entry_as_a_user(schedule):
    staff_with("run_periodic_tasks")
    out = StringIO()
    call_command("jobwatch_periodic", "--run", ENTRY, "--user", "oncall", "--dry-run", stdout=out)
    assert "Would send demo.tasks.call_partner to queue run-now-test" in out.getvalue() and sent_messages(schedule) == []
    call_command("jobwatch_periodic", "--run", ENTRY, "--user", "oncall", stdout=out)
    assert len(sent_messages(schedule)) == 1
    assert ActionLog.objects.filter(action="run_periodic_task", surface="command", outcome="succeeded").count() == 1
    with pytest.raises(CommandError, match="--user"):
        call_command("jobwatch_periodic", "--run", ENTRY)
    staff_with(username="viewer")
    with pytest.raises(CommandError, match="run_periodic_tasks"):
        call_command("jobwatch_periodic", "--run", ENTRY, "--user", "viewer")


def test_a_manual_run_is_not_the_schedules(schedule):
    now = timezone.now()
    job_row("scheduled", "demo.tasks.call_partner", QUEUE, at=now - timedelta(seconds=30), origin_entry=ENTRY,
            origin_kind="beat")
    job_row("by-hand", "demo.tasks.call_partner", QUEUE, at=now - timedelta(seconds=20), origin_entry=ENTRY,
            origin_kind="manual")
    assert [problem for problem in periodic.detect(now) if problem.subject == ENTRY] == []  # not "sent twice"
