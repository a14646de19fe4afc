"""The admin's lists of the monitor's tables at any size: counted as the dashboard counts (exact up
to a cap, else said to be an estimate), sorted only where an index keeps the order, and the jobs'
search box answered through indexes (monitors/admin_search.py) — a task id, a task's name, text in
the arguments or errors — rather than by reading the whole history."""

import json
import re

import pytest
from django.db import connection
from django.test import Client

from monitors.actions import selection
from monitors import admin_search
from monitors.admin_search import search_jobs
from monitors.models import JobExecution, TaskCounter
from monitors.web import counting
from tests.brokers import staff_with
from tests.rows import job_row

pytestmark = pytest.mark.django_db
CHANGELIST = "/admin/monitors/jobexecution/"


@pytest.fixture
def admin_client():
    client = Client()
    client.force_login(staff_with("view_jobexecution", "replay_jobs"))
    return client


@pytest.fixture
def shop():
    """Jobs of three tasks, each task counted by the recorder (its counters name every task seen)."""
    jobs = [
        job_row("8d0c0e55-charge-1", "shop.tasks.charge_card", "payments", state="failed",
                exception_type="payments.CardDeclined", exception_message="card 4242 declined by the issuer"),
        job_row("8d0c0e55-charge-2", "shop.tasks.charge_card", "payments"),
        job_row("ab12-mail-1", "shop.tasks.send_receipt", "mail", args=["order-7731"],
                origin_receiver="shop.signals.receipt_on_paid"),
        job_row("ab12-sync-1", "crm.tasks.sync_contact", "default", args=[99]),
    ]
    for name in {job.task_name for job in jobs}:
        TaskCounter.objects.create(metric="sent", name=name, hostname="w1", queue_name="q", value=1)
    return jobs


def ids(response):
    return {job.task_id for job in response.context["cl"].result_list}


@pytest.mark.parametrize("term, found", [
    ("8d0c0e55-charge-2", {"8d0c0e55-charge-2"}),               # a task id, exactly
    ("charge_CARD", {"8d0c0e55-charge-1", "8d0c0e55-charge-2"}),  # part of a task's name, any case
    ("shop.tasks", {"8d0c0e55-charge-1", "8d0c0e55-charge-2", "ab12-mail-1"}),
    ("order-7731", {"ab12-mail-1"}),                             # text in the arguments
    ("declined by", {"8d0c0e55-charge-1"}),                      # text in the error message
    ("receipt_on", {"ab12-mail-1"}),                             # part of the receiver
    ("CardDecl", {"8d0c0e55-charge-1"}),                         # part of the exception type
    ("8d0c0e55", set()),                                         # part of an id is not an id
    ("nothing-like-this", set()),
    ("8d0c0e55-charge-1" + "x" * 300, set()),                    # longer than any task id
])
def test_the_search_box_finds_jobs_by_id_name_text_receiver_and_exception(admin_client, shop, term, found):
    response = admin_client.get(CHANGELIST, {"q": term})
    assert response.status_code == 200
    assert ids(response) == found


def test_the_search_tells_what_it_read_only_of_the_newest_jobs(admin_client, shop, monkeypatch):
    monkeypatch.setattr(admin_search, "NAME_SEARCH_ROWS", 1)
    # The receiver belongs to the third job of four: not the newest one.
    assert ids(admin_client.get(CHANGELIST, {"q": "receipt_on"})) == set()
    page = admin_client.get(CHANGELIST, {"q": "receipt_on"}).content.decode()
    assert "Receivers and exception types are searched in the newest 1 jobs" in page
    # A task id and a task's name are found over the whole history.
    assert ids(admin_client.get(CHANGELIST, {"q": "8d0c0e55-charge-1"})) == {"8d0c0e55-charge-1"}
    assert ids(admin_client.get(CHANGELIST, {"q": "charge_card"})) == {"8d0c0e55-charge-1", "8d0c0e55-charge-2"}
    # Without a search, nothing is said.
    assert "searched in the newest" not in admin_client.get(CHANGELIST).content.decode()


def test_a_search_holding_a_nul_character_finds_nothing_and_says_why(admin_client, shop):
    # The admin's own search form refuses it before the search runs; the search itself too.
    response = admin_client.get(CHANGELIST, {"q": "charge\x00card"})
    assert response.status_code == 200 and "Null characters are not allowed" in response.content.decode()
    jobs, notes = search_jobs(JobExecution.objects.all(), "charge\x00card")
    assert list(jobs) == [] and "NUL character" in notes[0]


def test_every_part_of_the_search_has_an_index_to_go_to(shop):
    """With sequential scans priced out, the plan still reads no partition of the history whole:
    each ORed part of the search is a lookup of an index (task id, task name, the trigram
    indexes, the id range of the newest jobs)."""
    selection.forget()
    jobs, _ = search_jobs(JobExecution.objects.all(), "charge_card")
    sql, params = jobs.order_by("-id")[:100].query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_indexscan = off")  # each part must be found by its index, not a walk of ids
        cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
        plan = cursor.fetchone()[0]
    plan = plan if isinstance(plan, list) else json.loads(plan)
    scans = list(nodes(plan[0]["Plan"]))
    assert not [node for node in scans if node["Node Type"] == "Seq Scan"], json.dumps(plan, indent=1)
    assert any(node["Node Type"] == "BitmapOr" for node in scans)


def nodes(plan):
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


def test_the_list_says_how_it_counted(admin_client, shop, monkeypatch):
    # Four jobs of a search with a cap of two: "2+", as the dashboard would say, and every row
    # still listed.
    monkeypatch.setattr(counting, "CAP", 2)
    response = admin_client.get(CHANGELIST, {"q": "shop.tasks"})
    assert response.context["cl"].paginator.counted.kind == "at least"
    assert "2+</span> job executions" in response.content.decode()
    assert len(response.context["cl"].result_list) == 3
    # The whole table: PostgreSQL's own figure of its rows once it has one (after an ANALYZE),
    # else counted like a filter; never a count of every row.
    response = admin_client.get(CHANGELIST)
    counted = response.context["cl"].paginator.counted
    assert counted.kind in ("estimated", "at least") and f"{counted.label}</span> job executions" in response.content.decode()
    assert len(response.context["cl"].result_list) == 4
    # Under the cap the count is exact, as Django would give it.
    monkeypatch.setattr(counting, "CAP", 100)
    response = admin_client.get(CHANGELIST, {"state__exact": "failed"})
    assert response.context["cl"].result_count == 1 and response.context["cl"].paginator.counted.kind == "exact"


def test_pages_are_never_cut_short_by_a_count_that_is_not_exact(admin_client, shop, monkeypatch):
    # Two rows a page and a cap of two: the count says "2+" (three rows, for the page links), yet
    # the second page holds the third and the fourth.
    from monitors.admin import JobExecutionAdmin

    monkeypatch.setattr(counting, "CAP", 2)
    monkeypatch.setattr(JobExecutionAdmin, "list_per_page", 2)
    first = admin_client.get(CHANGELIST)
    second = admin_client.get(CHANGELIST, {"p": "2"})
    assert len(first.context["cl"].result_list) == 2 and len(second.context["cl"].result_list) == 2
    assert ids(first) | ids(second) == {job.task_id for job in shop}


def test_only_the_enqueue_time_is_offered_for_sorting(admin_client, shop):
    page = admin_client.get(CHANGELIST).content.decode()
    headers = page.split("<thead>")[1].split("</thead>")[0]
    sortable = re.findall(r'class="sortable[^"]*"', headers)
    assert len(sortable) == 1 and "column-enqueued_at" in sortable[0], sortable
