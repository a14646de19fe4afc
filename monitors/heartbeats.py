"""Each periodic task notes when it ran, so that a monitor that stopped is seen: the alert task
raises a "monitor stale" finding for it, and /healthz fails."""

import contextlib
import logging
import time
from datetime import timedelta

from django.db.models import F
from django.utils import timezone

from monitors.conf import setting
from monitors.models import MonitorHeartbeat

logger = logging.getLogger("monitors.heartbeats")

# The row celery beat writes when it starts (not a task: when the schedule began).
BEAT = "celery beat"
# The periodic tasks watched, and the setting that says how often each should run.
WATCHED = {
    "jobwatch.sample_queues": "SAMPLE_INTERVAL",
    "jobwatch.run_detectors": "DETECT_INTERVAL",
    "jobwatch.send_alerts": "ALERT_INTERVAL",
}


@contextlib.contextmanager
def heartbeat(task):
    """Around a periodic task's work: records when it ran, how long it took, and its error."""
    started, moment = time.monotonic(), timezone.now()
    error = ""
    try:
        yield
    except Exception as failure:
        error = f"{type(failure).__name__}: {failure}"[:2000]
        raise
    finally:
        values = {"last_run_at": moment, "last_duration": time.monotonic() - started, "last_error": error}
        updated = MonitorHeartbeat.objects.filter(task=task).update(runs=F("runs") + 1, **values)
        if not updated:
            MonitorHeartbeat.objects.get_or_create(task=task, defaults={**values, "runs": 1, "first_run_at": moment})


def interval_of(task):
    return float(setting(WATCHED[task]))


def heartbeat_rows():
    """{task: MonitorHeartbeat} of the watched tasks and of beat's start: what stale_tasks reads
    (a page that also lists them reads them once)."""
    return {beat.task: beat for beat in MonitorHeartbeat.objects.filter(task__in=[*WATCHED, BEAT])}


def stale_tasks(now=None, running=None, rows=None):
    """[(task, last run or None, interval)] of watched tasks that have not run for
    STALE_AFTER_INTERVALS of their interval.

    Counted from the later of a task's last run and beat's last start: beat starts its entries
    one interval after it starts, and a restarted beat needs as long again, so a fresh start or a
    deploy is not an outage. `running` names the watched task calling this: the monitor is up at
    least since now, even if nothing has reported yet. `rows`: heartbeat_rows(), if already read."""
    now = now or timezone.now()
    beats = dict(heartbeat_rows() if rows is None else rows)
    beat = beats.pop(BEAT, None)
    beat_started = beat.last_run_at if beat else None
    first_runs = [row.first_run_at or row.last_run_at for row in beats.values()]
    up_since = beat_started or min(first_runs, default=now if running else None)
    stale = []
    for task in WATCHED:
        interval = interval_of(task)
        allowed = timedelta(seconds=interval * setting("STALE_AFTER_INTERVALS"))
        row = beats.get(task)
        last_run = row.last_run_at if row else None
        counted_from = max((moment for moment in (last_run, beat_started) if moment), default=up_since)
        if counted_from is None or now - counted_from > allowed:
            stale.append((task, last_run, interval))
    return stale


def beat_started(scheduler=""):
    """celery beat (or a worker with -B) is starting, with `scheduler` (its class, as
    "module:Class"): Jobwatch's periodic tasks are due from now on, one interval later. Called
    on Celery's beat_init through watch_celery_app(). Beat must start even when the database does
    not answer."""
    moment = timezone.now()
    try:
        updated = MonitorHeartbeat.objects.filter(task=BEAT).update(last_run_at=moment, runs=F("runs") + 1, last_error="",
                                                                    scheduler=scheduler)
        if not updated:
            MonitorHeartbeat.objects.get_or_create(task=BEAT, defaults={"last_run_at": moment, "first_run_at": moment,
                                                                        "runs": 1, "scheduler": scheduler})
    except Exception:
        logger.warning("Jobwatch could not note that celery beat started", exc_info=True)
