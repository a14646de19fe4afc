"""The Periodic tasks page and an entry's page, from the Celery app's beat_schedule: every entry
with its schedule in words (read from the schedule objects), its last runs from the jobs that name
it, the next run its schedule expects (overdue marked), its success rate; arguments redacted like
a job's; names escaped; bad input 400. (Real beat processes sending real entries:
tests/test_beat_watch.py and tests/test_periodic_runs.py.)"""

import json
from datetime import timedelta
from io import StringIO
from urllib.parse import urlencode

import pytest
from celery import current_app
from celery.schedules import crontab, solar
from django.core.management import call_command
from django.utils import timezone

from monitors.periodic.schedule import entries
from monitors.periodic.words import in_words
from tests.brokers import staff_with
from tests.rows import job_row

pytestmark = [pytest.mark.django_db]

HOSTILE = "nightly <img src=x onerror=alert(1)>"


@pytest.fixture
def schedule(monkeypatch):
    planned = {
        "every 15 s": {"task": "demo.tasks.noop", "schedule": 15.0},
        "nightly invoices": {"task": "demo.tasks.echo", "schedule": crontab(minute=0, hour=3),
                             "args": [1], "kwargs": {"api_token": "s3cret"}, "options": {"queue": "reports"}},
        HOSTILE: {"task": "demo.tasks.noop", "schedule": timedelta(minutes=5)},
        "broken": {"task": "demo.tasks.noop"},  # no schedule: beat would refuse it too
    }
    for name, options in planned.items():
        monkeypatch.setitem(current_app.conf.beat_schedule, name, options)
    return planned


def test_schedules_read_in_words():
    assert in_words(crontab(minute=0, hour=3)) == "every day at 03:00 UTC"
    assert in_words(crontab(minute=30, hour=9, day_of_week="1-5")) == "Monday to Friday at 09:30 UTC"
    assert in_words(crontab(minute=30, hour=9, day_of_week="mon,thu")) == "Monday, Thursday at 09:30 UTC"
    assert in_words(crontab(minute="*/5")) == "every 5 min"
    assert in_words(crontab(minute=5)) == "at minute 5 of every hour"
    assert in_words(crontab(minute="5,35", hour="*/2")) == "crontab 5,35 */2 * * * (UTC)"
    assert in_words(crontab(minute=0, hour=0, day_of_month=1)) == "crontab 0 0 1 * * (UTC)"
    for every, words in ((15, "every 15 s"), (90, "every 90 s"), (300, "every 5 min"), (7200, "every 2 h"),
                         (86400, "every day"), (timedelta(days=2), "every 2 days"), (0.5, "every 0.5 s")):
        from celery.schedules import schedule as interval

        assert in_words(interval(every if isinstance(every, timedelta) else timedelta(seconds=every))) == words
    sunrise = solar.__new__(solar)  # its constructor needs the optional ephem library; its fields are what is read
    sunrise.event, sunrise.lat, sunrise.lon = "sunrise", 48.85, 2.35
    assert in_words(sunrise) == "at sunrise at 48.85, 2.35"


def test_entries_come_from_the_apps_schedule_with_jobwatchs_own(schedule):
    known = entries()
    assert {"every 15 s", "nightly invoices", HOSTILE, "jobwatch.run_detectors"} <= set(known)
    assert "broken" not in known
    nightly = known["nightly invoices"]
    assert (nightly.task, nightly.queue, nightly.words) == ("demo.tasks.echo", "reports", "every day at 03:00 UTC")
    assert nightly.kwargs == {"api_token": "[redacted]"} and nightly.args == [1]
    assert known["every 15 s"].interval_seconds == 15 and nightly.interval_seconds is None


def test_the_page_shows_runs_next_run_and_success_and_marks_an_overdue_entry(client, schedule):
    now = timezone.now()
    for minutes_ago, state in ((1, "succeeded"), (16, "failed"), (31, "succeeded")):
        job_row(f"every-{minutes_ago}", "demo.tasks.noop", "celery", at=now - timedelta(seconds=minutes_ago),
                origin_entry="every 15 s", origin_kind="beat", state=state, runtime=0.2)
    # The 5-minute entry last ran 20 minutes ago: its next run was due 15 minutes ago.
    job_row("late-1", "demo.tasks.noop", "celery", at=now - timedelta(minutes=20), origin_entry=HOSTILE,
            origin_kind="beat", runtime=1.0)
    client.force_login(staff_with())
    rows = {row["name"]: row for row in client.get("/jobwatch/api/periodic/").json()["entries"]}
    every = rows["every 15 s"]
    assert every["states"] == ["succeeded", "failed", "succeeded"] and every["success_rate"] == 67
    assert every["last_run"]["task_id"] == "every-1" and not every["overdue"]
    late = rows[HOSTILE]
    assert late["overdue"] and late["schedule"] == "every 5 min"
    assert rows["nightly invoices"]["last_run"] is None

    page = client.get("/jobwatch/periodic/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "was due" in html and "every day at 03:00 UTC" in html and "s3cret" not in html

    detail = client.get(f"/jobwatch/api/periodic/entry/?{urlencode({'name': HOSTILE})}").json()
    assert detail["known"] and [run["task_id"] for run in detail["runs"]] == ["late-1"]
    assert client.get(f"/jobwatch/periodic/entry/?{urlencode({'name': HOSTILE})}").status_code == 200
    jobs = client.get(f"/jobwatch/api/jobs/?{urlencode({'entry': 'every 15 s'})}").json()
    assert {job["task_id"] for job in jobs["jobs"]} == {"every-1", "every-16", "every-31"}


def test_a_long_schedule_is_paged_with_its_troubles_first_and_searchable(client, schedule, monkeypatch):
    from monitors.models import Finding
    from monitors.web.periodic import PAGE_SIZE

    for n in range(PAGE_SIZE + 10):
        monkeypatch.setitem(current_app.conf.beat_schedule, f"tenant {n:03d} export",
                            {"task": "demo.tasks.echo", "schedule": 3600.0})
    now = timezone.now()
    Finding.objects.create(fingerprint="periodic_failing:tenant 059 export", detector="periodic", kind="periodic_failing",
                           subject="tenant 059 export", severity="warning", title="Periodic task tenant 059 export fails",
                           explanation="x", first_seen=now, last_seen=now)
    client.force_login(staff_with())
    first = client.get("/jobwatch/api/periodic/").json()
    names = [row["name"] for row in first["entries"]]
    assert len(names) == PAGE_SIZE and names[0] == "tenant 059 export"  # its trouble first, then by name
    assert first["entries"][0]["finding"]["kind"] == "periodic_failing" and first["with_findings"] == 1
    assert first["matching"] == first["total"] and first["next_page"] == 2
    second = client.get("/jobwatch/api/periodic/?page=2").json()
    assert not set(names) & {row["name"] for row in second["entries"]} and second["next_page"] is None
    assert len(names) + len(second["entries"]) == first["total"]

    found = client.get("/jobwatch/api/periodic/?q=TENANT 00").json()
    assert [row["name"] for row in found["entries"]] == [f"tenant 00{n} export" for n in range(10)]
    by_task = client.get("/jobwatch/api/periodic/?q=tasks.noop").json()
    assert {row["name"] for row in by_task["entries"]} == {"every 15 s", HOSTILE}
    page = client.get("/jobwatch/periodic/?q=tenant&page=2").content.decode()
    assert "← page 1" in page and "Periodic task tenant 059 export fails" not in page
    assert "tenant 059 export fails" in client.get("/jobwatch/periodic/").content.decode()
    assert client.get("/jobwatch/periodic/?page=x").status_code == 400
    assert client.get("/jobwatch/periodic/?q=" + "x" * 201).status_code == 400
    assert b"No entry or task holds" in client.get("/jobwatch/periodic/?q=nothing-like-it").content


def test_bad_input_and_unknown_entries(client, schedule):
    assert client.get("/jobwatch/periodic/").status_code == 302  # to the sign-in page
    client.force_login(staff_with())
    assert client.get("/jobwatch/periodic/entry/").status_code == 400
    gone = client.get("/jobwatch/periodic/entry/?name=retired")
    assert gone.status_code == 200 and b"No entry of that name" in gone.content


def test_the_command_lists_the_same_entries(schedule):
    job_row("late-cmd", "demo.tasks.noop", "celery", at=timezone.now() - timedelta(minutes=20), origin_entry=HOSTILE,
            origin_kind="beat")
    out = StringIO()
    call_command("jobwatch_periodic", "--json", stdout=out)
    listed = {row["name"]: row for row in json.loads(out.getvalue())}
    assert listed[HOSTILE]["overdue"] and listed["nightly invoices"]["schedule"] == "every day at 03:00 UTC"
    table = StringIO()
    call_command("jobwatch_periodic", stdout=table)
    assert "OVERDUE since" in table.getvalue() and "every day at 03:00 UTC" in table.getvalue()


def test_a_crontabs_next_run_is_right_across_daylight_saving():
    """03:00 in Paris is 01:00 UTC in summer and 02:00 UTC in winter: the next run after a change
    of clocks is the local 03:00, not an hour off."""
    from datetime import UTC, datetime

    from celery import Celery

    from monitors.periodic.runs import next_expected
    from monitors.periodic.schedule import Entry

    app = Celery("paris", set_as_current=False)
    app.conf.timezone = "Europe/Paris"
    entry = Entry(name="nightly", task="demo.tasks.noop", schedule=crontab(minute=0, hour=3, app=app))
    after = {datetime(2025, 10, 20, 1, 0): datetime(2025, 10, 21, 1, 0),  # summer
             datetime(2025, 10, 25, 1, 0): datetime(2025, 10, 26, 2, 0),  # the clocks go back that night
             datetime(2026, 3, 28, 2, 0): datetime(2026, 3, 29, 1, 0)}  # and forward
    for last, expected in after.items():
        assert next_expected(entry, last.replace(tzinfo=UTC)) == expected.replace(tzinfo=UTC)
