"""The jobs list's text filter (monitors/actions/selection.py) on PostgreSQL's trigram indexes
(migration 0017): exact over the whole history, case-insensitive, % and _ taken literally; text the
indexes cannot look up, a database without them and SQLite keep the search of the newest jobs, and
the page says so."""

from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth.models import User
from django.db import connection, connections
from django.test import Client
from django.utils import timezone

from monitors import partitions
from monitors.actions import selection
from monitors.actions.selection import JobSelection, filtered, pinned
from monitors.models import JobExecution

pytestmark = pytest.mark.django_db

NEWEST_ONLY = "Text is searched in the newest 5 jobs; add a time range (since) to search further back."
TOO_SHORT = "Text with fewer than three letters or digits in a row is searched in the newest 5 jobs"


@pytest.fixture(autouse=True)
def newest_five(monkeypatch):
    """The bound of the unindexed search, small enough to cross with a few jobs; and the question
    "are the indexes there" asked afresh, before and after each test."""
    monkeypatch.setattr(selection, "TEXT_SEARCH_ROWS", 5)
    selection.forget()
    yield
    selection.forget()


@pytest.fixture
def staff():
    client = Client()
    client.force_login(User.objects.create_user("oncall", is_staff=True))
    return client


def job(task_id, args=(1,), message="", minutes_ago=0):
    at = timezone.now() - timedelta(minutes=minutes_ago)
    return JobExecution.objects.create(task_id=task_id, task_name="shop.sync", state="failed" if message else "succeeded",
                                       queue="default", args=list(args), kwargs={}, exception_message=message,
                                       exception_type="ConnectionError" if message else "", enqueued_at=at, updated_at=at)


def history(text_of_the_oldest="Connection refused by db-3", others=7):
    """The oldest job has the text in its error; `others` newer jobs, all matching in their arguments."""
    oldest = job("oldest", message=text_of_the_oldest, minutes_ago=60)
    newer = [job(f"newer-{n}", args=[n, "refused"], minutes_ago=50 - n) for n in range(others)]
    return [oldest, *newer]


def found(filters):
    jobs, notes = filtered(pinned(filters))
    return {row.task_id for row in jobs}, notes


def trigram_children(index):
    """The partitions' own indexes that make up `index` (a partitioned index), by partition."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT t.relname, c.relname, am.amname, pg_get_indexdef(c.oid) FROM pg_inherits h"
            " JOIN pg_class c ON c.oid = h.inhrelid JOIN pg_index i ON i.indexrelid = c.oid"
            " JOIN pg_class t ON t.oid = i.indrelid JOIN pg_am am ON am.oid = c.relam"
            " WHERE h.inhparent = to_regclass(%s)", [index])
        return {table: (name, method, definition) for table, name, method, definition in cursor.fetchall()}


def job_partitions():
    with connection.cursor() as cursor:
        cursor.execute("SELECT c.relname FROM pg_inherits h JOIN pg_class c ON c.oid = h.inhrelid"
                       " WHERE h.inhparent = to_regclass('monitors_jobexecution')")
        return {name for (name,) in cursor.fetchall()}


def test_the_trigram_indexes_are_on_every_partition_and_on_new_ones():
    for index in selection.TEXT_INDEXES:
        children = trigram_children(index)
        assert set(children) == job_partitions() and len(children) >= 2  # the days and the catch-all
        assert all(method == "gin" and "gin_trgm_ops" in definition for _, method, definition in children.values())
    # A day made later gets them: an empty one, and one whose rows waited in the catch-all (attached).
    empty_day, waiting_day = datetime(2031, 1, 5, tzinfo=UTC), datetime(2031, 1, 6, tzinfo=UTC)
    JobExecution.objects.create(task_id="early", task_name="t", state="enqueued", args=["refused"],
                                enqueued_at=waiting_day + timedelta(hours=1), updated_at=waiting_day)
    made = [partitions.add_day(connection, partitions.JOBS, day) for day in (empty_day, waiting_day)]
    for index in selection.TEXT_INDEXES:
        assert set(made) <= set(trigram_children(index))
    assert selection.trigram_indexes("default") == (True, False)


def test_a_job_older_than_the_newest_is_found_and_the_action_acts_on_it_too(staff, monkeypatch):
    from monitors.web import counting

    monkeypatch.setattr(counting, "TIMEOUT_MS", 5000)  # what is counted, not how fast
    monkeypatch.setattr(counting, "ANSWER_BUDGET_MS", 10_000)
    jobs = history()
    listed = staff.get("/jobwatch/api/jobs/", {"text": "refused", "count": "1"}).json()
    assert [row["task_id"] for row in listed["jobs"]] == [row.task_id for row in reversed(jobs)]  # all eight, oldest too
    assert listed["notes"] == []
    assert listed["count"]["kind"] == "exact" and listed["count"]["value"] == 8  # indexed: counted like any filter
    assert "newest" not in staff.get("/jobwatch/jobs/", {"text": "refused"}).content.decode()
    # "Replay every job matching this filter" reads the filter the same way.
    made = JobSelection.from_filter({"text": "refused"})
    assert made.queryset().count() == 8 and made.scope() == ["text = refused"]


def test_the_search_uses_the_trigram_indexes_with_no_bound_on_ids():
    history()
    jobs, _ = filtered(pinned({"text": "refused"}))
    assert '"id" >' not in str(jobs.query)  # only up_to's "id" <=, the moment the list was made
    jobs, _ = filtered({"text": "refused"})  # without it, for the plan: its pkey scan would do here too
    sql, params = jobs.order_by("-id").query.sql_with_params()
    with connection.cursor() as cursor:
        # A few rows are read fastest without an index; the point here is that the indexes answer
        # this query's expressions (they must be the same, or PostgreSQL cannot use them).
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_indexscan = off")
        cursor.execute(f"EXPLAIN {sql}", params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    for index in selection.TEXT_INDEXES:
        names = {name for name, _, _ in trigram_children(index).values()}
        assert any(f"Bitmap Index Scan on {name}" in plan for name in names), plan
    assert "~~" in plan and "BitmapOr" in plan


def test_the_search_ignores_case():
    job("shouting", args=["Connection REFUSED"])
    job("quiet", message="refused by peer")
    job("other", args=["accepted"])
    assert found({"text": "Refused"}) == ({"shouting", "quiet"}, [])
    assert found({"text": "REFUSED BY"})[0] == {"quiet"}


@pytest.mark.parametrize("text, wanted, unwanted", [
    ("100% done", ["100% done"], ["100 percent done", "1000 done"]),  # indexed
    ("job_42x", ["job_42x"], ["jobA42x"]),                             # indexed
    ("5%", ["5%"], ["50", "5 x"]),                                     # too short: the newest jobs
    ("a_b", ["a_b"], ["axb"]),                                         # too short: the newest jobs
    ("%", ["50%"], ["50"]),
    ("_", ["a_"], ["ab"]),
])
def test_percent_and_underscore_are_literal(text, wanted, unwanted):
    for n, value in enumerate(unwanted + wanted):
        job(f"job-{n}", args=[value])
    assert found({"text": text})[0] == {f"job-{n}" for n in range(len(unwanted), len(unwanted) + len(wanted))}


def test_text_too_short_for_the_indexes_searches_the_newest_jobs_and_the_page_says_so(staff):
    jobs = [job(f"job-{n}", args=[f"ok {n}"], minutes_ago=10 - n) for n in range(8)]
    shown, notes = found({"text": "ok"})
    assert shown == {row.task_id for row in jobs[-5:]}  # the newest five
    assert len(notes) == 1 and notes[0].startswith(TOO_SHORT)
    page = staff.get("/jobwatch/jobs/", {"text": "ok"}).content.decode()
    assert TOO_SHORT in page
    # With a time range, the whole range is read, as before.
    since = (timezone.now() - timedelta(hours=1)).isoformat()
    assert found({"text": "ok", "since": since}) == ({row.task_id for row in jobs}, [])
    # Three characters, none a run of three letters or digits: still too short to look up.
    assert not selection.text_indexed("o.k", "default") and not selection.text_indexed("ok", "default")
    assert selection.text_indexed("k-ok", "default") is False and selection.text_indexed("ok7", "default")
    assert selection.text_indexed("отказ", "default")  # letters of any script (the test database is C.UTF-8)


def test_without_the_indexes_postgresql_searches_the_newest_jobs_as_before(staff):
    jobs = history()
    with connection.cursor() as cursor:  # as in a database where pg_trgm could not be created (rolled back after)
        for index in selection.TEXT_INDEXES:
            cursor.execute(f"DROP INDEX {index}")
    selection.forget()
    assert found({"text": "refused"}) == ({row.task_id for row in jobs[-5:]}, [NEWEST_ONLY])
    assert NEWEST_ONLY in staff.get("/jobwatch/jobs/", {"text": "refused"}).content.decode()
    # Never counted row by row: the planner's estimate, or "many" should even that not come in time.
    assert staff.get("/jobwatch/api/jobs/", {"text": "refused", "count": "1"}).json()["count"]["kind"] in ("estimated", "unknown")


@pytest.mark.django_db(databases=["default", "embedded"])
def test_on_sqlite_the_newest_jobs_are_searched_as_before(monkeypatch):
    # Every query of the selection on the embedded database, as the embedded default would make it.
    monkeypatch.setattr(JobExecution, "objects", JobExecution.objects.db_manager("embedded"))
    assert connections["embedded"].vendor == "sqlite"
    jobs = history()
    assert all(row._state.db == "embedded" for row in jobs)
    assert selection.trigram_indexes("embedded") == (False, False)
    assert found({"text": "REFUSED"}) == ({row.task_id for row in jobs[-5:]}, [NEWEST_ONLY])
    assert found({"text": "100%"})[0] == set()


def test_a_count_says_many_when_neither_the_count_nor_the_estimate_comes_in_time(staff, monkeypatch):
    """The jobs list's count is bounded twice: the exact count, then the planner's estimate; a filter
    for which neither comes in time is shown as "many", never as a number nobody measured."""
    from monitors.web import counting

    history()
    monkeypatch.setattr(counting, "TIMEOUT_MS", 1)
    monkeypatch.setattr(counting, "ESTIMATE_TIMEOUT_MS", 1)
    slow = "(SELECT pg_sleep(0.05)) IS NOT NULL"
    monkeypatch.setattr(counting, "plan_estimate", lambda queryset, connection: connection.cursor().execute(f"SELECT {slow}"))
    queryset = JobExecution.objects.extra(where=[slow])
    assert counting.bounded_count(queryset).as_dict() == {"value": 0, "kind": "unknown", "label": "many"}
    page = staff.get("/jobwatch/jobs/", {"text": "refused", "count": "1"}, headers={"HX-Request": "true", "HX-Target": "job-count"})
    assert page.status_code == 200 and "job-count" in page.content.decode()
