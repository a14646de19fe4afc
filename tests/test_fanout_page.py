"""The Fan-out page reads every job of its window, so a window that holds too many is refused
with a word (PostgreSQL cancels its reads once they have spent READ_BUDGET_MS together) rather
than holding a database connection for seconds on every poll."""

import pytest
from django.db import DatabaseError, connection

from monitors.web import counting, fanout
from tests.rows import job_row

pytestmark = pytest.mark.django_db


def slow_reads_of_the_history(execute, sql, params, many, context):
    """Each grouped read of the job table takes 0.2 s first, as a window of millions would."""
    if "monitors_jobexecution" in sql and "GROUP BY" in sql:
        context["cursor"].execute("SELECT pg_sleep(0.2)")
    return execute(sql, params, many, context)


def test_a_window_too_large_to_read_in_time_says_so(admin_client, monkeypatch):
    job_row("j1", "shop.sync", "default", origin_kind="save", origin_model="shop.Order", origin_save="s1",
            origin_receiver="shop.receivers.sync")
    monkeypatch.setattr(fanout, "READ_BUDGET_MS", 100)
    with connection.execute_wrapper(slow_reads_of_the_history):
        page = admin_client.get("/jobwatch/fanout/", {"window": "7d"})
        data = admin_client.get("/jobwatch/api/fanout/", {"window": "7d"}).json()
    assert page.status_code == 200
    assert "are too many to count within 0.1 s; choose a shorter window" in page.content.decode()
    assert data["too_many"].startswith("The jobs of the last 7 days are too many") and data["origins"] == []
    # In time, the same page counts them.
    data = admin_client.get("/jobwatch/api/fanout/", {"window": "7d"}).json()
    assert data["too_many"] == "" and [origin["jobs"] for origin in data["origins"]] == [1]


def test_the_reads_share_one_budget():
    with pytest.raises(DatabaseError) as raised:
        with counting.shared_timeout("default", 150) as next_read:
            with connection.cursor() as cursor:
                next_read()
                cursor.execute("SELECT pg_sleep(0.1)")  # within 150 ms on its own…
                next_read()
                cursor.execute("SELECT pg_sleep(0.1)")  # …but not with the first
    assert fanout.cancelled(raised.value)


def test_a_database_error_that_is_not_the_budget_is_not_taken_for_it():
    with pytest.raises(DatabaseError) as raised:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1/0")
    assert not fanout.cancelled(raised.value)
