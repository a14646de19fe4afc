"""Each periodic task notes when it ran, so that a monitor that stopped is seen: the alert task
raises a "monitor stale" finding for it, and /healthz fails."""

import contextlib
import time
from datetime import timedelta

from django.db.models import F
from django.utils import timezone

from monitors.conf import setting
from monitors.models import MonitorHeartbeat

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


def stale_tasks(now=None):
    """[(task, last run or None, interval)] of watched tasks that have not run for
    STALE_AFTER_INTERVALS of their interval, or never ran."""
    now = now or timezone.now()
    beats = {beat.task: beat for beat in MonitorHeartbeat.objects.filter(task__in=list(WATCHED))}
    # A task that never ran is stale once the monitor has been up long enough for it to have run
    # (beat starts its entries in any order), or when nothing ever ran at all.
    monitor_up_since = min((beat.first_run_at or beat.last_run_at for beat in beats.values()), default=None)
    stale = []
    for task in WATCHED:
        interval = interval_of(task)
        allowed = timedelta(seconds=interval * setting("STALE_AFTER_INTERVALS"))
        beat = beats.get(task)
        if beat is None:
            if monitor_up_since is None or now - monitor_up_since > allowed:
                stale.append((task, None, interval))
        elif now - beat.last_run_at > allowed:
            stale.append((task, beat.last_run_at, interval))
    return stale
