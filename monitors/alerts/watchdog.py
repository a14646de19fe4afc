"""The watch the workers keep on celery beat.

Jobwatch's detectors, its alerts and the rule that says "the monitor is stale" are all periodic
tasks that beat sends. When beat dies — or never sent them: a DatabaseScheduler that does not
know Jobwatch's entries, a deploy that forgot beat — nothing that beat runs can say so, and the
dashboard goes quiet. So every worker also keeps a watch, on a timer of its own
(WATCHDOG_SECONDS): when Jobwatch's periodic tasks have stopped, the first worker to claim the
turn runs the periodic tasks' detector (every entry's missed run) and the alert pass itself, the
stale rule opens its critical finding, and the incident is notified through the channels like any
other — within a few of the tasks' intervals.

A worker keeps the watch only once it has been up for as long as the stale rule allows (a worker
started before beat is not an outage), and while beat runs the watch costs one small read per
worker per WATCHDOG_SECONDS.
"""

import logging
from datetime import timedelta

from django.db import IntegrityError, connections
from django.db.models import F
from django.utils import timezone

from monitors.alerts import run_alerts
from monitors.heartbeats import WATCHED, interval_of, stale_tasks
from monitors.conf import setting
from monitors.detectors import periodic, run_detectors
from monitors.models import MonitorHeartbeat

logger = logging.getLogger("monitors.alerts")

# The MonitorHeartbeat row of the watch: when a worker last took a turn, and which.
WATCHDOG = "jobwatch watchdog"


def grace():
    """How long a worker waits after it starts before it may call beat dead: the longest time
    the stale rule allows any of the watched tasks."""
    return timedelta(seconds=max(interval_of(task) for task in WATCHED) * setting("STALE_AFTER_INTERVALS"))


def keep_watch(worker, worker_started_at, now=None):
    """One look; returns what it did ("monitor running", "too early", "another worker's turn",
    "alerted")."""
    now = now or timezone.now()
    if now - worker_started_at < grace():
        return "too early"
    stale = stale_tasks(now)
    if not stale:
        return "monitor running"
    if not claim_turn(worker, now):
        return "another worker's turn"
    logger.warning("Jobwatch: its periodic tasks are not running (%s); %s raises the alert in beat's place",
                   ", ".join(task for task, _, _ in stale), worker)
    # The periodic tasks' detector first: their runs stopped with beat, and it says which.
    run_detectors([periodic.NAME], now)
    run_alerts(now, in_place_of_beat=worker)
    return "alerted"


def claim_turn(worker, now):
    """True for one worker per turn (about WATCHDOG_SECONDS), whichever asks first."""
    period = timedelta(seconds=float(setting("WATCHDOG_SECONDS")) * 0.8)
    values = {"last_run_at": now, "last_error": f"turn taken by {worker}"[:2000], "runs": F("runs") + 1}
    if MonitorHeartbeat.objects.filter(task=WATCHDOG, last_run_at__lt=now - period).update(**values):
        return True
    try:
        _, created = MonitorHeartbeat.objects.get_or_create(
            task=WATCHDOG, defaults={"last_run_at": now, "first_run_at": now, "runs": 1, "last_error": values["last_error"]})
    except IntegrityError:  # another worker created it at the same moment: its turn
        return False
    return created


def watch_in_thread(worker, worker_started_at):
    """The timer's callback: one look, on this thread's own database connection, closed after
    (a worker's main process must not keep a connection that the pool's next child inherits)."""
    try:
        keep_watch(worker, worker_started_at)
    except Exception:  # the timer must keep running; the next look tries again
        logger.exception("Jobwatch's watch on beat failed")
    finally:
        connections.close_all()
