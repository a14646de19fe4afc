"""django-celery-beat's entries, with its own DatabaseScheduler running (in a real worker, -B):
their runs are filed under the entry, a healthy one gives no finding, a failing one and one
that outlasts its interval give theirs, and beat stopped gives a missed run within the interval
plus the grace. Enable/Disable switches an entry where its scheduler reads it — a POST with CSRF,
previewed, its own permission (refused → 403 and a refused row), audited, from the page and from
`manage.py jobwatch_periodic` — and a disabled entry is neither sent nor expected.

django-celery-beat's releases lag Django's: this runs where it installs (the oldest supported
pair, see bin/test) and skips elsewhere."""

from datetime import timedelta
from io import StringIO
from urllib.parse import urlencode

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from monitors.detectors import periodic
from monitors.heartbeats import BEAT
from monitors.models import ActionLog, JobExecution, MonitorHeartbeat
from tests.brokers import staff_with
from tests.workers import WorkerProcess, database_url_for_workers, fresh_redis_url, wait_for

pytest.importorskip("django_celery_beat")

from django_celery_beat.models import IntervalSchedule, PeriodicTask  # noqa: E402

pytestmark = [pytest.mark.django_db(transaction=True)]  # the worker writes on its own connections

TICK, FAILING, SLEEPER = "db tick", "db partner push", "db long export"
SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"


def every(seconds):
    return IntervalSchedule.objects.get_or_create(every=seconds, period=IntervalSchedule.SECONDS)[0]


@pytest.fixture
def table():
    """Three entries in django-celery-beat's table: a healthy one every 2 s, one whose partner
    refuses every connection every 2 s, one that sleeps 6 s every 4 s."""
    PeriodicTask.objects.create(name=TICK, task="demo.tasks.noop", interval=every(2))
    PeriodicTask.objects.create(name=FAILING, task="demo.tasks.call_partner", interval=every(2),
                                args='["http://127.0.0.1:9/orders", {"n": 1}]')
    PeriodicTask.objects.create(name=SLEEPER, task="demo.tasks.sleep_for", interval=every(4), args="[6]")


def runs_of(name):
    return JobExecution.objects.filter(origin_entry=name)


def findings(now=None):
    return {(problem.subject, problem.kind) for problem in periodic.detect(now or timezone.now())}


@pytest.mark.integration
def test_database_schedulers_entries_are_watched_switched_and_missed(tmp_path, table, client, settings):
    settings.JOBWATCH = {**settings.JOBWATCH, "THRESHOLDS": {"PERIODIC_GRACE_SECONDS": 3, "PERIODIC_FAILING_RUNS": 2}}
    env = {"DATABASE_URL": database_url_for_workers(), "CELERY_BROKER_URL": fresh_redis_url(12)}
    operator = staff_with("switch_periodic_tasks")
    client.force_login(operator)
    with WorkerProcess(tmp_path / "worker.log", env=env, concurrency=3, beat=True, beat_scheduler=SCHEDULER, name="dbbeat"):
        wait_for(lambda: runs_of(TICK).filter(state="succeeded").count() >= 3
                 and runs_of(FAILING).filter(state="failed").count() >= 2
                 and runs_of(SLEEPER).filter(state="succeeded").exists(), timeout=60, what="runs of every entry")
        assert set(runs_of(TICK).values_list("origin_kind", flat=True)) == {"beat"}
        # Chosen on beat's command line, which only beat can read: it says so when it starts.
        assert MonitorHeartbeat.objects.get(task=BEAT).scheduler == SCHEDULER
        now = findings()
        assert (FAILING, "periodic_failing") in now and (SLEEPER, "periodic_overlap") in now, now
        assert not {kind for subject, kind in now if subject == TICK}, now  # healthy: nothing to say

        # Disable, from the page: previewed, then done; the scheduler stops sending it.
        page = client.get(f"/jobwatch/periodic/entry/?{urlencode({'name': TICK})}")
        assert b"Disable" in page.content
        preview = client.post("/jobwatch/periodic/switch/", {"name": TICK, "enabled": "no"})
        assert preview.status_code == 200 and b"Yes, disable db tick" in preview.content
        assert PeriodicTask.objects.get(name=TICK).enabled
        done = client.post("/jobwatch/periodic/switch/", {"name": TICK, "enabled": "no", "confirmed": "yes"})
        assert done.status_code == 302
        assert not PeriodicTask.objects.get(name=TICK).enabled
        log = ActionLog.objects.get(action="disable_periodic_task", dry_run=False)
        assert (log.outcome, log.username, log.target) == ("succeeded", operator.username, TICK)
        # DatabaseScheduler reads its table again within its 5 s tick; then no more runs.
        wait_for(lambda: not runs_of(TICK).filter(enqueued_at__gt=timezone.now() - timedelta(seconds=4)).exists(),
                 timeout=30, what="the scheduler to stop sending the disabled entry")
        sent_while_disabled = runs_of(TICK).count()
        wait_for(lambda: (TICK, "periodic_missed") not in findings(), timeout=5, what="no missed run")
        assert runs_of(TICK).count() == sent_while_disabled
    # Beat is gone with its worker: the enabled entries' runs are missed; the disabled one is not expected.
    last_sent = runs_of(FAILING).order_by("-enqueued_at").values_list("enqueued_at", flat=True).first()
    wait_for(lambda: timezone.now() > last_sent + timedelta(seconds=2 + 3 + 1), timeout=15, what="interval and grace")
    now = findings()
    assert (FAILING, "periodic_missed") in now and (TICK, "periodic_missed") not in now, now

    # Enable again, from the command line; a page without the permission is refused and audited.
    out = StringIO()
    call_command("jobwatch_periodic", enable=TICK, user=operator.username, stdout=out)
    assert "db tick is enabled (was disabled)" in out.getvalue()
    assert PeriodicTask.objects.get(name=TICK).enabled
    assert ActionLog.objects.filter(action="enable_periodic_task", surface="command", outcome="succeeded").exists()
    client.force_login(staff_with("run_periodic_tasks", username="no-switch"))
    refused = client.post("/jobwatch/periodic/switch/", {"name": TICK, "enabled": "no", "confirmed": "yes"})
    assert refused.status_code == 403 and PeriodicTask.objects.get(name=TICK).enabled
    assert ActionLog.objects.filter(action="disable_periodic_task", outcome="refused", username="no-switch").exists()


def test_only_the_tables_entries_switch_and_bad_input_is_named(client, settings, monkeypatch, table):
    from celery import current_app

    monkeypatch.setitem(current_app.conf.beat_schedule, "code entry", {"task": "demo.tasks.noop", "schedule": 60.0})
    client.force_login(staff_with("switch_periodic_tasks"))
    page = client.get(f"/jobwatch/periodic/entry/?{urlencode({'name': 'code entry'})}")
    assert page.status_code == 200 and b"Disable" not in page.content  # code: only a deploy changes it
    code = client.post("/jobwatch/periodic/switch/", {"name": "code entry", "enabled": "no", "confirmed": "yes"})
    assert code.status_code == 400 and b"only a deploy changes" in code.content
    unknown = client.post("/jobwatch/periodic/switch/", {"name": "no such entry", "enabled": "no"})
    assert unknown.status_code == 400 and b"no periodic task named" in unknown.content
    bad = client.post("/jobwatch/periodic/switch/", {"name": TICK, "enabled": "maybe"})
    assert bad.status_code == 400 and PeriodicTask.objects.get(name=TICK).enabled
    assert client.get("/jobwatch/periodic/switch/").status_code == 405  # a change is a POST
    with pytest.raises(CommandError, match="needs --user"):
        call_command("jobwatch_periodic", disable=TICK)
    out = StringIO()
    call_command("jobwatch_periodic", disable=TICK, user=staff_with("switch_periodic_tasks", username="cli").username,
                 dry_run=True, stdout=out)
    assert "Would disable db tick (now enabled)" in out.getvalue() and PeriodicTask.objects.get(name=TICK).enabled


def test_an_entry_enabled_again_is_not_late_for_the_runs_it_had_while_disabled(table):
    from monitors.actions import set_periodic_enabled
    from tests.rows import job_row

    MonitorHeartbeat.objects.create(task=BEAT, last_run_at=timezone.now() - timedelta(hours=2), runs=1, scheduler=SCHEDULER)
    job_row("tick-old", "demo.tasks.noop", "celery", at=timezone.now() - timedelta(minutes=30), origin_entry=TICK,
            origin_kind="beat")
    PeriodicTask.objects.filter(name=TICK).update(last_run_at=timezone.now() - timedelta(minutes=30))
    assert (TICK, "periodic_missed") in findings()  # every 2 s, nothing for 30 min: missed
    operator = staff_with("switch_periodic_tasks")
    set_periodic_enabled(operator, TICK, False, surface="command")
    assert PeriodicTask.objects.get(name=TICK).last_run_at is None  # its scheduler's own save() clears it
    assert TICK not in {subject for subject, _ in findings()}  # disabled: not expected
    set_periodic_enabled(operator, TICK, True, surface="command")
    assert (TICK, "periodic_missed") not in findings()  # counted from its enabling, as its scheduler does


def test_a_projects_own_scheduler_class_says_which_it_extends():
    from django_celery_beat.schedulers import DatabaseScheduler

    from monitors.integration import scheduler_name
    from monitors.periodic.schedule import scheduler_in_use

    class ShopScheduler(DatabaseScheduler):
        pass

    ShopScheduler.__module__ = "shop.beat"
    name = scheduler_name(ShopScheduler)
    assert name == "shop.beat:test_a_projects_own_scheduler_class_says_which_it_extends.<locals>.ShopScheduler " \
                   "(django_celery_beat.schedulers:DatabaseScheduler)"
    assert scheduler_name(DatabaseScheduler) == SCHEDULER
    MonitorHeartbeat.objects.create(task=BEAT, last_run_at=timezone.now(), runs=1, scheduler=name)
    assert "django_celery_beat" in scheduler_in_use()
