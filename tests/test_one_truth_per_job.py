"""One truth per job: what the lists, a job's page, the Orphans page and the findings say about a
job agree. A purged or discarded job says so wherever it is shown; a job's page leads with its
error, what to do and where it belongs; every job that needs the same missing record gets one
cause; and the Orphans page counts what its finding counts.

The jobs are an invoicing app's (not the demo shop's), and the missing record is a User."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from monitors.actions import discard_jobs
from monitors.actions.selection import JobSelection
from monitors.detectors import orphans
from monitors.detectors.lifecycle import record_problems
from monitors.models import ActionLog, ArchivedMessage, Finding, JobExecution, JobTally
from tests.rows import job_row

pytestmark = [pytest.mark.django_db]

MISSING_USER = "424242"  # no such User: the record these jobs need


def job(task_id, **fields):
    return job_row(task_id, **{"task_name": "billing.send_invoice", "queue": "invoices", **fields})


@pytest.fixture
def operator():
    return User.objects.create_superuser("oncall", "oncall@example.com", "pw")


@pytest.fixture
def staff(operator):
    client = Client()
    client.force_login(operator)
    return client


def position(page, text):
    assert text in page, text
    return page.index(text)


def test_a_purged_job_says_so_in_the_list_and_on_its_page_with_the_way_back(staff, operator):
    purged = job("inv-purged", state="purged", progress=3)
    job("inv-waiting", state="enqueued")
    log = ActionLog.objects.create(at=timezone.now(), user=operator, username="oncall", surface="dashboard",
                                   action="purge_messages", target="queue invoices", parameters={}, outcome="succeeded")
    archived = ArchivedMessage.objects.create(action=log, archived_at=timezone.now(), broker="redis", queue="invoices",
                                              task_id=purged.task_id, task_name=purged.task_name, raw="{}",
                                              removed_at=timezone.now())

    rows = staff.get("/jobwatch/api/jobs/").json()["jobs"]
    assert {row["task_id"]: row["state"] for row in rows} == {"inv-purged": "purged", "inv-waiting": "enqueued"}
    listed = staff.get("/jobwatch/jobs/?state=purged").content.decode()
    assert "inv-purged" in listed and "inv-waiting" not in listed and ">Purged<" in listed

    page = staff.get("/jobwatch/jobs/inv-purged/").content.decode()
    assert "Purged from <strong>invoices</strong>" in page and f"audit log #{log.pk}" in page
    assert f'name="archived" value="{archived.pk}"' in page and "Restore its message to invoices" in page
    assert "Replay…" not in page  # its message can come back as it was; a replay would run it twice


def test_a_discarded_job_is_left_out_of_the_list_until_asked_for_and_its_page_says_by_whom(staff, operator):
    job("inv-failed", state="failed", exception_type="smtplib.SMTPRecipientsRefused", finished_at=timezone.now())
    discard_jobs(operator, JobSelection.from_ids(["inv-failed"]), surface="dashboard")

    assert staff.get("/jobwatch/api/jobs/").json()["jobs"] == []
    listed = staff.get("/jobwatch/jobs/?discarded=yes").content.decode()
    assert "inv-failed" in listed and "Discarded <small>(failed)</small>" in listed
    assert staff.get("/jobwatch/jobs/?discarded=maybe").status_code == 400

    page = staff.get("/jobwatch/jobs/inv-failed/").content.decode()
    entry = ActionLog.objects.get(action="discard_jobs", dry_run=False)
    assert "Discarded from the history" in page and f"audit log #{entry.pk}" in page
    assert 'name="undo" value="1"' in page and "Bring back into the history" in page


def test_a_failed_jobs_page_leads_with_the_error_what_to_do_and_where_it_belongs(staff):
    failed = job("inv-1", state="failed", exception_type="smtplib.SMTPServerDisconnected",
                 exception_message="Connection unexpectedly closed", error_target="mail.example.net:587",
                 error_kind="connection", finished_at=timezone.now(),
                 traceback="Traceback (most recent call last):\n" + "  File \"x.py\", line 1, in f\n" * 40)
    job("inv-2", state="failed", exception_type="smtplib.SMTPServerDisconnected", finished_at=timezone.now())
    minute = timezone.now().replace(second=0, microsecond=0)
    JobTally.objects.create(minute=minute, metric="failed", task_name="billing.send_invoice",
                            exception="SMTPServerDisconnected", count=2)
    seen = {"first_seen": timezone.now(), "last_seen": timezone.now()}
    named = Finding.objects.create(**seen, fingerprint="f1", detector="services", kind="service_failing", subject="x",
                                   severity="critical", title="mail.example.net:587 is failing", explanation="",
                                   evidence={"job_ids": [failed.task_id]}, keys=["service:mail.example.net:587"])
    about = Finding.objects.create(**seen, fingerprint="f2", detector="backlog", kind="queue_backlog", subject="y",
                                   severity="warning", title="invoices is backing up", explanation="",
                                   evidence={}, keys=["queue:invoices"])
    Finding.objects.create(**seen, fingerprint="f3", detector="backlog", kind="queue_backlog", subject="z", severity="warning",
                           title="reports is backing up", explanation="", evidence={}, keys=["queue:reports"])

    page = staff.get("/jobwatch/jobs/inv-1/").content.decode()
    error = position(page, "<strong>smtplib.SMTPServerDisconnected</strong>: Connection unexpectedly closed")
    assert position(page, "From <strong>mail.example.net:587</strong>") > error
    replay = position(page, "Replay…")
    assert error < replay < position(page, "<h2>Timeline</h2>") < position(page, "<h2>Traceback</h2>")
    assert "?task=billing.send_invoice&amp;window=24h" in page and "2 failures in the last 24 h" in page
    assert f'/jobwatch/findings/{named.pk}/' in page and f'/jobwatch/findings/{about.pk}/' in page
    assert "reports is backing up" not in page
    assert page.index(f'/jobwatch/findings/{named.pk}/') < page.index(f'/jobwatch/findings/{about.pk}/')
    assert "?task=billing.send_invoice&amp;state=failed&amp;exception=SMTPServerDisconnected" in page

    data = staff.get("/jobwatch/api/jobs/inv-1/").json()
    assert data["failure_group"] == {"task": "billing.send_invoice", "exception": "SMTPServerDisconnected", "failures_24h": 2}
    assert [finding["id"] for finding in data["findings"]] == [named.pk, about.pk]


def billing_orphans(problems):
    """This app's orphans (the shared test broker may hold other tests' messages, orphans too)."""
    return [problem for problem in problems if problem.kind == "orphaned_jobs" and problem.subject.startswith("billing.")]


def test_every_job_that_needs_the_same_missing_record_gets_one_cause(settings):
    """Two tasks need User 424242. One was enqueued after the transaction that made it committed:
    the user existed, so it was deleted. The other was enqueued in a transaction that never
    committed — an update of some other row that rolled back — which alone would read "rolled
    back". One record, one story: both are "deleted after enqueue"."""
    settings.JOBWATCH = {"THRESHOLDS": {"ORPHAN_COMMIT_GRACE_SECONDS": 10}}
    now = timezone.now()
    earlier = now - timedelta(minutes=5)
    needs = [{"arg": "user_id", "model": "auth.User", "pk": MISSING_USER}]
    job("inv-a", task_name="billing.send_invoice", state="enqueued", references=needs, at=earlier,
        origin_in_atomic=True, origin_transaction="t1", origin_committed_at=earlier + timedelta(seconds=1))
    job("inv-b", task_name="billing.sync_ledger", state="enqueued", references=needs, at=earlier,
        origin_in_atomic=True, origin_transaction="t2", origin_committed_at=None)

    problems = billing_orphans(orphans.detect(now))
    assert sorted((problem.subject, problem.evidence["cause"]) for problem in problems) == [
        ("billing.send_invoice:deleted_after_enqueue", "deleted_after_enqueue"),
        ("billing.sync_ledger:deleted_after_enqueue", "deleted_after_enqueue")]


def test_a_job_enqueued_by_an_update_of_the_record_it_needs_was_not_rolled_back(settings):
    """An update of User 424242 inside a transaction that rolled back enqueued the job; the user is
    gone now. The rollback did not remove a user that existed before it: it was deleted."""
    now = timezone.now()
    job("inv-c", state="enqueued", at=now - timedelta(minutes=5), origin_kind="save", origin_model="auth.User",
        origin_pk=MISSING_USER, origin_created=False, origin_in_atomic=True, origin_transaction="t3",
        references=[{"arg": "user_id", "model": "auth.User", "pk": MISSING_USER}])
    [problem] = billing_orphans(orphans.detect(now))
    assert problem.evidence["cause"] == "deleted_after_enqueue"


def test_the_orphans_page_and_the_findings_page_count_what_the_finding_counts(staff):
    """Three orphans: two recorded as waiting in a queue, one failed. The page's count, the places,
    the purge button and the finding's list of jobs all say the same numbers — the queued ones
    counted once, the failed one not offered to purge."""
    now = timezone.now()
    earlier = now - timedelta(minutes=5)
    needs = [{"arg": "user_id", "model": "auth.User", "pk": MISSING_USER}]
    for n in (1, 2):
        job(f"inv-q{n}", state="enqueued", references=needs, at=earlier, origin_in_atomic=False)
    job("inv-f", state="failed", references=needs, at=earlier, finished_at=now - timedelta(minutes=1),
        exception_type="django.contrib.auth.models.User.DoesNotExist", origin_in_atomic=False)
    record_problems("orphans", orphans.detect(now), now)
    finding = Finding.objects.get(kind="orphaned_jobs", status="open", subject__startswith="billing.")
    assert finding.count == 3 and sum(finding.evidence["where"].values()) == 3
    assert sorted(finding.task_ids()) == ["inv-f", "inv-q1", "inv-q2"]
    assert {queue: sorted(ids) for queue, ids in finding.evidence["queued_job_ids"].items()} == {"invoices": ["inv-q1", "inv-q2"]}

    page = staff.get("/jobwatch/orphans/").content.decode()
    assert "<td>3</td>" in page and "Purge 2 queued in invoices" in page
    assert page.count('name="pick" value="id:inv-q') == 2 and 'value="id:inv-f"' not in page

    # A job the finding names that the history no longer has still has its line.
    JobExecution.objects.filter(task_id="inv-q2").delete()
    detail = staff.get(f"/jobwatch/findings/{finding.pk}/").content.decode()
    assert "Replay the 3 jobs it lists" in detail and "<code>inv-q2</code>" in detail and "not recorded" in detail


def figures(page):
    """The plotly figures a page embeds (json_script), by element id."""
    import json
    import re

    return {name: json.loads(body) for name, body in
            re.findall(r'<script id="([^"]+)" type="application/json">(.*?)</script>', page, re.S)}


@pytest.mark.parametrize("path, span", [("/jobwatch/", 3600), ("/jobwatch/?window=6h", 6 * 3600),
                                        ("/jobwatch/queues/invoices/", 3600), ("/jobwatch/failures/?window=24h", 86400),
                                        ("/jobwatch/fanout/", 900)])
def test_every_chart_on_a_page_spans_the_pages_window(staff, path, span):
    """Data for only the last ten minutes: each chart still spans the page's whole window, the
    same one on every chart of the page, rather than stretching ten minutes across its width."""
    from monitors.models import QueueSample

    now = timezone.now()
    for minutes in range(10):
        at = (now - timedelta(minutes=minutes)).replace(second=0, microsecond=0)
        JobTally.objects.create(minute=at, metric="succeeded", task_name="billing.send_invoice", queue="invoices", count=5)
        JobTally.objects.create(minute=at, metric="failed", task_name="billing.send_invoice", exception="Timeout", count=1)
        QueueSample.objects.create(queue="invoices", sampled_at=at, depth=minutes, oldest_age=2.0 * minutes)
    found = figures(staff.get(path).content.decode())
    assert found, f"no charts on {path}"
    ranges = {name: figure["layout"]["xaxis"]["range"] for name, figure in found.items()}
    assert len({tuple(each) for each in ranges.values()}) == 1, ranges  # one axis for the whole page
    start, end = next(iter(ranges.values()))  # milliseconds of the site's wall time
    assert abs((end - start) / 1000 - span) < 5


def test_failures_open_on_the_last_hour_and_a_quiet_hour_points_to_the_day(staff):
    three_hours_ago = (timezone.now() - timedelta(hours=3)).replace(second=0, microsecond=0)
    JobTally.objects.create(minute=three_hours_ago, metric="failed", task_name="billing.send_invoice",
                            exception="SMTPServerDisconnected", count=5)
    page = staff.get("/jobwatch/failures/").content.decode()
    assert "last hour" in page and "No failures in the last hour." in page
    assert "5 in the last 24 hours</a>" in page and "window=24h" in page
    day = staff.get("/jobwatch/api/failures/?window=24h").json()
    assert day["total"] == 5 and day["groups"][0]["exception"] == "SMTPServerDisconnected"
