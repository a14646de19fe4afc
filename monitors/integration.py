"""The one line a Celery app module needs: `watch_celery_app(app)`.

Recording itself is switched on by the Django app (INSTALLED_APPS); this makes sure it is on in
processes that import the Celery app before Django is set up, and puts Jobwatch's periodic tasks
on the app's beat schedule — wherever the line stands in the module and whatever the app does
with its own schedule:

- on the configuration, once it is read (now, if the module already read it — `app.conf.x`
  reads it — or when Celery reads it), so tools that print the schedule show them;
- on the running scheduler when beat starts (Celery's beat_init), because an app may replace
  `beat_schedule` after this line, and a database scheduler (django-celery-beat) keeps its own.
  Entries the app defines under the same names are the app's choice and are left as they are.

It also keeps every worker in line with the queues an operator paused (monitors/pausing.py): a
worker leaves them out when it starts, checks them every QUEUE_PAUSE_CHECK_SECONDS, and answers
the `jobwatch_sync_pauses` broadcast a pause or resume sends.

And because a monitor that is not scheduled is silent, a worker says so when it starts and
Jobwatch's periodic tasks have not run (see also monitors/checks.py, /healthz and the banner), and
every worker keeps a watch on beat (monitors/alerts/watchdog.py): when Jobwatch's periodic tasks
stop, one worker raises the alert in beat's place.
"""

import logging
import threading

from celery.signals import beat_init, celeryd_after_setup, worker_ready
from celery.utils.text import match_case
from celery.worker.control import control_command
from django.db import DatabaseError
from django.utils import timezone

from monitors.conf import setting
from monitors.recording import signals

logger = logging.getLogger("monitors.integration")

# The remote control command a pause or resume broadcasts (monitors/actions/queues.py).
SYNC_PAUSES_COMMAND = "jobwatch_sync_pauses"


def watch_celery_app(app):


    signals.connect()
    app.jobwatch_watched = True  # for `manage.py check` (monitors/checks.py)
    if app.configured:
        add_periodic_tasks(app)
    else:
        # Reading the configuration any earlier would load Django's settings from inside their
        # own import.
        app.on_after_configure.connect(add_periodic_tasks, sender=app, weak=False)
    beat_init.connect(beat_starting, weak=False, dispatch_uid="jobwatch.beat_starting")
    worker_ready.connect(worker_starting, weak=False, dispatch_uid="jobwatch.worker_starting")
    celeryd_after_setup.connect(worker_setting_up, weak=False, dispatch_uid="jobwatch.worker_setting_up")
    return app


def add_periodic_tasks(sender, **kwargs):
    conf = sender.conf
    set_setting(conf, "beat_schedule", {**beat_schedule(), **(conf.beat_schedule or {})})
    if "monitors.tasks" not in (conf.include or ()):
        set_setting(conf, "include", [*(conf.include or ()), "monitors.tasks"])


def beat_starting(sender=None, **kwargs):
    """celery beat (or a worker with -B) is starting, its scheduler set up from the app's schedule
    or its database: add any of Jobwatch's entries it lacks, and note the start (the stale rule
    counts from it, so that a fresh start is not an outage)."""
    # Imported here: this module is imported with the Celery app, before Django's apps are ready.
    from monitors.heartbeats import beat_started

    if not getattr(sender.app, "jobwatch_watched", False):
        return  # another Celery app in the same process
    try:
        added = schedule_on(sender.scheduler)
    except Exception:  # beat must start even if one of its schedulers is odd; say so loudly
        logger.exception("Jobwatch could not add its periodic tasks to %s: sampling, detection and alerts will not run",
                         type(sender.scheduler).__name__)
    else:
        if added:
            logger.info("Jobwatch scheduled %s on %s", ", ".join(added), type(sender.scheduler).__name__)
    beat_started(scheduler=scheduler_name(type(sender.scheduler)))


def scheduler_name(kind):
    """"module:Class" of beat's scheduler; a project's own subclass of a known one says which it
    extends ("shop.beat:Scheduler (django_celery_beat.schedulers:DatabaseScheduler)"), since that
    decides where the entries beat runs are kept."""
    name = f"{kind.__module__}:{kind.__qualname__}"
    known = next((base for base in kind.__mro__[1:] if base.__module__.startswith(("django_celery_beat.", "celery."))), None)
    if known is not None and not kind.__module__.startswith(("django_celery_beat.", "celery.")):
        name += f" ({known.__module__}:{known.__qualname__})"
    return name[:200]


def schedule_on(scheduler):
    """Add Jobwatch's entries the scheduler lacks (Celery's own update_from_dict, which
    django-celery-beat's DatabaseScheduler turns into PeriodicTask rows); the names added."""
    present = set(scheduler.schedule)
    missing = {name: entry for name, entry in beat_schedule().items() if name not in present}
    if missing:
        scheduler.update_from_dict(missing)
        # A database scheduler lists enabled entries only: one an operator switched off stays
        # off (their choice), but not in silence.
        still_missing = sorted(set(missing) - set(scheduler.schedule))
        if still_missing:
            logger.warning("Jobwatch: %s %s disabled in %s; until enabled, %s", ", ".join(still_missing),
                           "is" if len(still_missing) == 1 else "are", type(scheduler).__name__,
                           "queue samples, findings and alerts are not updated")
        return sorted(set(missing) - set(still_missing))
    return []


def worker_setting_up(sender=None, instance=None, **kwargs):
    """A worker about to create its consumer: leave out the queues an operator paused."""
    if instance is None or not getattr(instance.app, "jobwatch_watched", False):
        return
    from monitors import pausing  # models: see beat_starting

    pausing.hold_at_start(instance)


@control_command(name=SYNC_PAUSES_COMMAND)
def sync_pauses(state, **kwargs):
    """Broadcast by a pause or a resume: this worker checks its queues now."""
    from monitors import pausing  # models: see beat_starting

    return pausing.sync(state.consumer)


def check_pauses(consumer):
    from monitors import pausing  # models: see beat_starting

    try:
        pausing.sync(consumer)
    except Exception:  # the consumer's timer must keep running; the next check tries again
        logger.exception("Jobwatch could not check the paused queues")


def worker_starting(sender=None, **kwargs):
    """A worker is ready: say so when it cannot run Jobwatch's periodic tasks, or when they have
    not been running — the one place someone reads at start-up even when beat is not running."""
    app = getattr(sender, "app", None)
    if app is None or not getattr(app, "jobwatch_watched", False):
        return
    timer = getattr(sender, "timer", None)
    if timer is not None and not getattr(sender, "jobwatch_checks_pauses", False):  # once, not per reconnect
        sender.jobwatch_checks_pauses = True
        timer.call_repeatedly(float(setting("QUEUE_PAUSE_CHECK_SECONDS")), check_pauses, (sender,))
        if float(setting("WATCHDOG_SECONDS")) > 0:
            watch = BeatWatch(getattr(sender, "hostname", "") or "a worker")
            timer.call_repeatedly(float(setting("WATCHDOG_SECONDS")), watch.look)
    unknown = sorted(name for name in beat_schedule() if name not in app.tasks)
    if unknown:
        logger.warning("Jobwatch: this worker does not know the tasks %s; add 'monitors' to INSTALLED_APPS and call "
                       "app.autodiscover_tasks() (or include 'monitors.tasks') so that they can run", ", ".join(unknown))
    for line in silence_report():
        logger.warning("Jobwatch: %s", line)


class BeatWatch:
    """A worker's watch on beat (monitors/alerts/watchdog.py), looked at from the consumer's timer
    in a thread of its own: the look reads the database and may send notifications, which must
    not hold up the consumer; one look at a time."""

    def __init__(self, worker):
        self.worker = worker
        self.started_at = timezone.now()
        self.thread = None

    def look(self):
        if self.thread is not None and self.thread.is_alive():
            return
        from monitors.alerts import watchdog  # models: see beat_starting

        self.thread = threading.Thread(target=watchdog.watch_in_thread, args=(self.worker, self.started_at),
                                       name="jobwatch-beat-watch", daemon=True)
        self.thread.start()


def silence_report(now=None):
    """Lines saying which of Jobwatch's periodic tasks are not running, and what to do; empty when
    they run (or when the database cannot say)."""
    from monitors.heartbeats import stale_tasks  # models: see beat_starting

    try:
        stale = stale_tasks(now)
    except DatabaseError:
        return []  # not migrated yet, or the database is away: the recorder reports that
    if not stale:
        return []
    described = [f"{task} last ran {last:%Y-%m-%d %H:%M:%S %Z}" if last else f"{task} has never run" for task, last, _ in stale]
    return ["its periodic tasks are not running (" + "; ".join(described) + "): queue samples, findings and alerts "
            "are not updated. Run celery beat for the Celery app that calls watch_celery_app(app) "
            "(or a worker with -B); if beat has just been started, this clears within a minute."]


def set_setting(conf, name, value):
    """`conf.<name> = value`, and the same under the app's namespace (CELERY_BEAT_SCHEDULE for an
    app configured with namespace="CELERY") when the project's settings define that name: Celery
    before 5.7 looks a setting up by its namespaced name first, so there the plain name alone
    would lose to the project's own CELERY_BEAT_SCHEDULE. Only then: a namespaced value written
    when the project has none would in turn hide the app's own later `app.conf.beat_schedule = …`."""
    conf[name] = value
    if conf.prefix:
        namespaced = match_case(conf.prefix + name, conf.prefix)
        if namespaced in conf:
            conf[namespaced] = value


def beat_schedule():
    """Jobwatch's periodic tasks; intervals are settings (read when beat starts)."""
    return {
        "jobwatch.sample_queues": {"task": "jobwatch.sample_queues", "schedule": float(setting("SAMPLE_INTERVAL"))},
        "jobwatch.run_detectors": {"task": "jobwatch.run_detectors", "schedule": float(setting("DETECT_INTERVAL"))},
        "jobwatch.send_alerts": {"task": "jobwatch.send_alerts", "schedule": float(setting("ALERT_INTERVAL"))},
        "jobwatch.roll_up_samples": {"task": "jobwatch.roll_up_samples", "schedule": float(setting("UPKEEP_INTERVAL"))},
        "jobwatch.prune_archive": {"task": "jobwatch.prune_archive", "schedule": float(setting("UPKEEP_INTERVAL"))},
        "jobwatch.prepare_partitions": {"task": "jobwatch.prepare_partitions",
                                        "schedule": float(setting("UPKEEP_INTERVAL"))},
        "jobwatch.prune_history": {"task": "jobwatch.prune_history", "schedule": float(setting("PRUNE_INTERVAL"))},
    }
