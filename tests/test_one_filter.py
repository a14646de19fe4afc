"""One filter, one set of jobs: the jobs list and "Replay every job matching this filter" read a
filter the same way (monitors/actions/selection.py), and the confirmation acts on the jobs its preview
counted, even when more matching jobs are recorded in between."""

import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.utils import timezone

from monitors.actions import selection
from monitors.models import ActionLog, JobExecution
from monitors.actions.selection import JobSelection
from tests.workers import fresh_redis_url

# A transaction per test, flushed after: the replay really sends, and the recorder writes what it
# sent from its own connection, which a rolled-back test transaction would leave behind.
pytestmark = pytest.mark.django_db(transaction=True)


def failed(task_id, text, at):
    return JobExecution.objects.create(task_id=task_id, task_name="shop.tasks.sync", state="failed", queue="default",
                                       args=[text], kwargs={}, payload_complete=True, updated_at=at, enqueued_at=at)


@pytest.fixture
def operator():
    account = User.objects.create_user("oncall", password="pw", is_staff=True)
    account.user_permissions.add(Permission.objects.get(codename="replay_jobs"))
    client = Client()
    client.force_login(account)
    return client


def hidden_fields(html, form_action):
    form = html[html.index(f'action="{form_action}"'):]
    form = form[: form.index("</form>")]
    return dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', form))


def test_a_text_search_means_the_same_jobs_in_the_list_and_the_replay(operator, monkeypatch, flush_recorder):
    fresh_redis_url(14)  # the site's broker in the tests: the replayed jobs land there
    monkeypatch.setattr(selection, "TEXT_SEARCH_ROWS", 5)  # the cap, small enough to cross here
    # Where no trigram index answers the text (SQLite, or PostgreSQL without pg_trgm: the capped
    # search tests/test_text_search.py leaves to this test) the list and the replay share the cap.
    monkeypatch.setattr(selection, "trigram_indexes", lambda alias: (False, False))
    now = timezone.now()
    jobs = [failed(f"job-{n}", "customer-7", now - timedelta(minutes=10 - n)) for n in range(8)]
    listed = operator.get("/jobwatch/jobs/", {"text": "customer-7"})
    shown = re.findall(r'/jobwatch/jobs/(job-\d)/', listed.content.decode())
    assert shown == [f"job-{n}" for n in range(7, 2, -1)]  # the newest five: the cap
    carried = hidden_fields(listed.content.decode(), "/jobwatch/jobs/replay/")
    # Pinned to the highest job id handed out when the list was made (on PostgreSQL the id
    # sequence's: at least the newest job's, below any job recorded afterwards).
    up_to = int(carried["up_to"])
    assert carried["text"] == "customer-7" and up_to >= jobs[-1].pk

    # A job recorded after the list was shown matches the filter too, but is not what was shown.
    late = failed("job-late", "customer-7", now)
    assert late.pk > up_to
    preview = operator.post("/jobwatch/jobs/replay/", carried)
    assert preview.status_code == 200 and "5 jobs match" in preview.content.decode()
    assert f"recorded up to job #{up_to}" in preview.content.decode()
    confirmed = hidden_fields(preview.content.decode().replace("<form method=\"post\">", '<form action="here">'), "here")
    assert confirmed["up_to"] == str(up_to)
    failed("job-later", "customer-7", now)
    response = operator.post("/jobwatch/jobs/replay/", {**confirmed, "confirmed": "yes"})
    assert response.status_code == 302
    log = ActionLog.objects.get(action="replay_jobs", dry_run=False)
    assert log.matched == 5 and log.parameters["selection"]["filter"]["up_to"] == str(up_to)
    flush_recorder()  # the five replays' rows, written before this test's data is flushed


def test_ages_are_pinned_to_the_moment_the_selection_is_made():
    made = JobSelection.from_filter({"task": "shop.tasks.sync", "since": "2h"})
    since = made.filters["since"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", since)
    again = JobSelection.from_filter(made.filters)  # read back from the audit log: unchanged
    assert again.filters == made.filters


@pytest.mark.parametrize("filters, key", [({"since": "2026-13-45T99:99"}, "since"), ({"until": "9999999999d"}, "until"),
                                          ({"task": "x", "up_to": "²"}, "up_to"), ({"state": "exploded"}, "state"),
                                          ({"task": "x", "colour": "red"}, "colour")])
def test_a_bad_filter_names_its_key(filters, key):
    with pytest.raises(selection.BadSelection) as refused:
        JobSelection.from_filter(filters)
    assert refused.value.key == key
