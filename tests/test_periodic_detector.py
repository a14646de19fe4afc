"""The periodic tasks' detector on recorded runs, as of a fixed `now`: a healthy schedule gives
nothing; a missed run (counted from the last run by the schedule's own reckoning — an interval,
a crontab time passed while beat was down), a run sent twice, a run stuck in its queue, failing
runs, a run longer than the gap to the next, and a run far slower than usual each give their
finding, with thresholds per entry; a missed run while beat itself is down joins the stale
monitor's incident. (Real beat processes: tests/test_beat_watch.py.)"""

from datetime import UTC, datetime, timedelta

import pytest
from celery import current_app
from celery.schedules import crontab
from prometheus_client.parser import text_string_to_metric_families

from monitors.heartbeats import BEAT, WATCHED
from monitors.detectors import periodic
from monitors.models import JobExecution, MonitorHeartbeat
from tests.rows import job_row

pytestmark = [pytest.mark.django_db]

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
MINUTELY, NIGHTLY = "minutely sync", "nightly report"


@pytest.fixture
def schedule(monkeypatch):
    monkeypatch.setitem(current_app.conf.beat_schedule, MINUTELY, {"task": "demo.tasks.noop", "schedule": 60.0})
    monkeypatch.setitem(current_app.conf.beat_schedule, NIGHTLY,
                        {"task": "demo.tasks.echo", "schedule": crontab(minute=0, hour=3), "options": {"queue": "reports"}})


@pytest.fixture
def beat_running():
    MonitorHeartbeat.objects.create(task=BEAT, last_run_at=NOW - timedelta(days=3), runs=1)
    for task in WATCHED:
        MonitorHeartbeat.objects.create(task=task, last_run_at=NOW - timedelta(seconds=5), runs=1)


run_number = iter(range(1_000_000))


def run(entry, seconds_ago, state="succeeded", runtime=0.5, task="demo.tasks.noop"):
    sent = NOW - timedelta(seconds=seconds_ago)
    finished = state in ("succeeded", "failed")
    return job_row(f"run-{next(run_number)}", task, "celery", at=sent, origin_entry=entry, origin_kind="beat", state=state,
                   started_at=sent + timedelta(seconds=0.1) if state != "enqueued" else None,
                   runtime=runtime if finished else None,
                   finished_at=sent + timedelta(seconds=0.1 + runtime) if finished else None,
                   exception_type="requests.exceptions.ConnectionError" if state == "failed" else "")


def found(subject=None):
    return {problem.kind: problem for problem in periodic.detect(NOW) if subject is None or problem.subject == subject}


def healthy_minutely(count=10, runtime=0.5):
    for n in range(count):
        run(MINUTELY, 30 + 60 * n, runtime=runtime)


def healthy_nightly():
    for days in range(3):
        run(NIGHTLY, 9 * 3600 + days * 86400, task="demo.tasks.echo")  # 03:00 each day


def test_a_healthy_schedule_gives_nothing(schedule, beat_running):
    healthy_minutely()
    healthy_nightly()
    assert found(MINUTELY) == {} and found(NIGHTLY) == {}


def test_a_missed_interval_run_counts_the_runs_missed(schedule, beat_running):
    healthy_nightly()
    for n in range(3):
        run(MINUTELY, 300 + 60 * n)  # the last one 5 minutes ago
    problem = found(MINUTELY)["periodic_missed"]
    assert problem.count == 4 and problem.evidence["beat_running"]
    assert "monitor:jobwatch" not in problem.links and f"periodic:{MINUTELY}" in problem.keys


def test_a_crontab_time_passed_while_beat_was_down_is_missed(schedule, beat_running):
    healthy_minutely()
    run(NIGHTLY, 9 * 3600 + 86400, task="demo.tasks.echo")  # yesterday 03:00; today's 03:00 never came
    problem = found(NIGHTLY)["periodic_missed"]
    assert problem.evidence["due"] == "2026-11-30T03:00:00+00:00"


def test_a_miss_while_beat_is_down_joins_the_stale_monitor(schedule):
    MonitorHeartbeat.objects.create(task=BEAT, last_run_at=NOW - timedelta(days=3), runs=1)
    for task in WATCHED:
        MonitorHeartbeat.objects.create(task=task, last_run_at=NOW - timedelta(minutes=10), runs=1)
    run(MINUTELY, 600)
    problem = found(MINUTELY)["periodic_missed"]
    assert "monitor:jobwatch" in problem.links and not problem.evidence["beat_running"]


def test_two_runs_where_one_was_due_are_two_beats(schedule, beat_running):
    healthy_minutely()
    run(MINUTELY, 28)  # 2 s after the newest
    assert "periodic_duplicate" in found(MINUTELY)


def test_a_run_waiting_in_its_queue_past_the_limit(schedule, beat_running, settings):
    healthy_minutely()
    run(NIGHTLY, 9 * 3600 + 86400, task="demo.tasks.echo")
    run(NIGHTLY, 9 * 3600, state="enqueued", task="demo.tasks.echo")  # sent at 03:00, still waiting
    problem = found(NIGHTLY)["periodic_not_started"]
    assert problem.evidence["waited_seconds"] == 9 * 3600
    settings.JOBWATCH = {**settings.JOBWATCH, "PERIODIC_THRESHOLDS": {NIGHTLY: {"PERIODIC_NOT_STARTED_SECONDS": 10 * 3600}}}
    assert "periodic_not_started" not in found(NIGHTLY)  # its own threshold


def test_failing_runs_overlap_and_slow_runs(schedule, beat_running, settings):
    healthy_nightly()
    for n in range(3):
        run(MINUTELY, 30 + 60 * n, state="failed")
    assert "periodic_failing" in found(MINUTELY)

    MonitorHeartbeat.objects.all().delete()
    run_ids = list(periodic.JobExecution.objects.filter(origin_entry=MINUTELY).values_list("pk", flat=True))
    periodic.JobExecution.objects.filter(pk__in=run_ids).delete()
    MonitorHeartbeat.objects.create(task=BEAT, last_run_at=NOW - timedelta(days=3), runs=1)
    for task in WATCHED:
        MonitorHeartbeat.objects.create(task=task, last_run_at=NOW - timedelta(seconds=5), runs=1)
    healthy_minutely(count=8, runtime=1.0)
    run(MINUTELY, 20, runtime=90.0)  # 90 s: past the 60 s to the next run, and 90× its usual
    problems = found(MINUTELY)
    assert problems["periodic_overlap"].evidence["gap_seconds"] == 60
    assert problems["periodic_slow"].evidence["usual_seconds"] == 1.0

    settings.JOBWATCH = {**settings.JOBWATCH, "PERIODIC_THRESHOLDS": {MINUTELY: {"PERIODIC_SLOW_FACTOR": 100}}}
    assert "periodic_slow" not in found(MINUTELY)


def test_a_run_still_running_past_the_gap_overlaps(schedule, beat_running):
    healthy_minutely(count=3)
    run(MINUTELY, 15, state="started")
    periodic.JobExecution.objects.filter(origin_entry=MINUTELY, state="started").update(started_at=NOW - timedelta(seconds=75))
    assert found(MINUTELY)["periodic_overlap"].evidence["running"]


def test_the_tally_counts_each_missed_run_once_and_metrics_give_it(schedule, beat_running, admin_client):
    """/metrics' jobwatch_periodic_missed_runs_total is a counter: each detector pass adds only the
    runs missed since the last pass; a run sent starts a new gap. Its last success is the latest
    successful run's finish, kept when older runs fall out of the detector's reading."""
    from monitors.models import PeriodicTally

    healthy_nightly()
    run(MINUTELY, 600)  # the last run 10 min ago; due 9 min ago; a minute's grace: 9 missed
    assert found(MINUTELY)["periodic_missed"].count == 9
    periodic.detect(NOW)  # the same pass again: nothing new
    assert PeriodicTally.objects.get(entry=MINUTELY).missed_runs_total == 9
    periodic.detect(NOW + timedelta(seconds=120))  # two more due
    assert PeriodicTally.objects.get(entry=MINUTELY).missed_runs_total == 11
    run(MINUTELY, -125, state="failed")  # beat back: a run (failed) ends the gap
    later = NOW + timedelta(seconds=125 + 60 * 3)  # 3 min later: 2 due past the grace
    assert {problem.kind: problem.count for problem in periodic.detect(later)}["periodic_missed"] == 2
    tally = PeriodicTally.objects.get(entry=MINUTELY)
    assert tally.missed_runs_total == 13
    assert tally.last_success_at == NOW - timedelta(seconds=600) + timedelta(seconds=0.6)

    # The latest run discarded: the reckoning goes back to the run 10 min before; nothing counted twice.
    JobExecution.objects.filter(origin_entry=MINUTELY, state="failed").delete()
    periodic.detect(later)
    assert PeriodicTally.objects.get(entry=MINUTELY).missed_runs_total == 13

    page = admin_client.get("/jobwatch/metrics").content.decode()
    samples = {(sample.name, sample.labels.get("entry")): sample.value
               for family in text_string_to_metric_families(page) for sample in family.samples}
    assert samples["jobwatch_periodic_missed_runs_total", MINUTELY] == 13
    assert samples["jobwatch_periodic_missed_runs_total", NIGHTLY] == 0
    success = NOW - timedelta(seconds=600) + timedelta(seconds=0.6)
    assert samples["jobwatch_periodic_last_success_timestamp_seconds", MINUTELY] == pytest.approx(success.timestamp())


def test_a_crontab_counts_every_time_it_passed(schedule, beat_running):
    run(NIGHTLY, 3 * 86400 + 9 * 3600, task="demo.tasks.echo")  # its last run 03:00 three days ago: 3 nights missed
    [problem] = [problem for problem in periodic.detect(NOW) if problem.subject == NIGHTLY and problem.kind == "periodic_missed"]
    assert problem.count == 3


def test_a_long_outage_of_a_crontab_is_counted_over_passes_never_lost(schedule, beat_running):
    from monitors.models import PeriodicTally

    run(NIGHTLY, 30 * 86400 + 9 * 3600, task="demo.tasks.echo")  # last run 03:00 thirty days ago: 30 nights missed
    [problem] = [problem for problem in periodic.detect(NOW) if problem.subject == NIGHTLY]
    assert problem.count == periodic.WALK_STEPS and "or more runs missed" in problem.title  # a pass stays short
    totals = [PeriodicTally.objects.get(entry=NIGHTLY).missed_runs_total]
    for _ in range(3):
        periodic.detect(NOW)
        totals.append(PeriodicTally.objects.get(entry=NIGHTLY).missed_runs_total)
    assert totals == [12, 24, 30, 30]
