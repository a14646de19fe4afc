"""The Fan-out page ranks the single saves of its window from the job rows, so a window that holds
too many leaves that table out with a word (PostgreSQL cancels the read after READ_BUDGET_MS)
rather than holding a database connection for seconds on every poll; the origins and models,
read from the per-minute counts, are shown whatever the window."""

from datetime import timedelta

import pytest
from django.utils import timezone
from django.db import DatabaseError, connection

from monitors.models import JobExecution, OriginTally
from monitors.recording.origin_tally import count_history
from monitors.web import fanout
from tests.rows import job_row

pytestmark = pytest.mark.django_db


def slow_reads_of_the_history(execute, sql, params, many, context):
    """Each grouped read of the job table takes 0.2 s first, as a window of millions would."""
    if "monitors_jobexecution" in sql and "GROUP BY" in sql:
        context["cursor"].execute("SELECT pg_sleep(0.2)")
    return execute(sql, params, many, context)


def test_a_window_too_large_to_rank_its_saves_in_time_says_so(admin_client, monkeypatch):
    for n in (1, 2):
        job_row(f"j{n}", "shop.sync", "default", origin_kind="save", origin_model="shop.Order", origin_save="s1",
                origin_receiver="shop.receivers.sync")
    count_history(JobExecution, OriginTally, connection, timezone.now() - timedelta(hours=1), timezone.now() + timedelta(minutes=1))
    monkeypatch.setattr(fanout, "READ_BUDGET_MS", 100)
    with connection.execute_wrapper(slow_reads_of_the_history):
        page = admin_client.get("/jobwatch/fanout/", {"window": "7d"})
        data = admin_client.get("/jobwatch/api/fanout/", {"window": "7d"}).json()
    assert page.status_code == 200
    assert "too many to rank single saves within 0.1 s; choose a shorter window for this table" in page.content.decode()
    assert data["too_many"].startswith("The jobs of the last hour are too many") and data["saves"] == []
    assert [(origin["jobs"], origin["per_save"]) for origin in data["origins"]] == [(2, 2.0)]  # from the counts
    # In time, the same page ranks them.
    data = admin_client.get("/jobwatch/api/fanout/", {"window": "7d"}).json()
    assert data["too_many"] == "" and [save["jobs"] for save in data["saves"]] == [2]


def test_a_database_error_that_is_not_the_budget_is_not_taken_for_it():
    with pytest.raises(DatabaseError) as raised:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1/0")
    assert not fanout.cancelled(raised.value)


def test_a_long_window_counts_its_origins_and_ranks_the_saves_of_its_last_hour(admin_client):
    """The origins come from the counts of the whole window; ranking single saves reads job rows,
    so it covers the last hour of a longer window, and says so."""
    earlier = timezone.now() - timedelta(hours=3)
    for n in (1, 2):
        job_row(f"old{n}", "shop.sync", "default", at=earlier, origin_kind="save", origin_model="shop.Order",
                origin_save="s-old", origin_receiver="shop.receivers.sync")
        job_row(f"new{n}", "shop.sync", "default", origin_kind="save", origin_model="shop.Order", origin_save="s-new",
                origin_receiver="shop.receivers.sync")
    count_history(JobExecution, OriginTally, connection, earlier - timedelta(minutes=1), timezone.now() + timedelta(minutes=1))
    data = admin_client.get("/jobwatch/api/fanout/", {"window": "24h"}).json()
    assert [(origin["jobs"], origin["saves"]) for origin in data["origins"]] == [(4, 2)]
    assert [save["origin_save"] for save in data["saves"]] == ["s-new"] and data["saves_window"] == "hour"
    assert "Saves that enqueued the most <small>last hour</small>" in admin_client.get("/jobwatch/fanout/?window=24h").content.decode()


@pytest.mark.parametrize("zone", ["UTC", "Asia/Kolkata"])  # hours are UTC hours, in a half-hour zone too
def test_a_windows_first_partial_hour_is_read_from_its_minutes(admin_client, settings, zone):
    """A day's window reads whole hours from the hourly counts and its first, partial hour from
    the minute counts: a job just inside the window is counted, one just before it is not."""
    settings.TIME_ZONE = zone
    now = timezone.now()
    for task_id, ago in (("inside", timedelta(hours=23, minutes=58)), ("before", timedelta(hours=24, minutes=5)),
                         ("now", timedelta(0))):
        job_row(task_id, "shop.sync", "default", at=now - ago, origin_kind="save", origin_model="shop.Order",
                origin_save=task_id, origin_receiver="shop.receivers.sync")
    count_history(JobExecution, OriginTally, connection, now - timedelta(days=2), now + timedelta(minutes=1))
    data = admin_client.get("/jobwatch/api/fanout/", {"window": "24h"}).json()
    assert [(origin["jobs"], origin["saves"]) for origin in data["origins"]] == [(2, 2)]
