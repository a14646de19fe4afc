"""The one line a Celery app module needs: `watch_celery_app(app)`.

Recording itself is switched on by the Django app (INSTALLED_APPS); this makes sure it is on in
processes that import the Celery app before Django is set up, and puts Jobwatch's periodic tasks
on the app's beat schedule once the app is configured (reading the configuration any earlier
would load Django's settings from inside their own import).
"""


def watch_celery_app(app):
    from celery.signals import beat_init

    from monitors.recording import signals

    signals.connect()
    app.on_after_configure.connect(add_periodic_tasks, sender=app, weak=False)
    # The monitor-stale rule counts from beat's start, so that a fresh start is not an outage.
    beat_init.connect(note_beat_start, weak=False, dispatch_uid="jobwatch.beat_started")
    return app


def note_beat_start(sender=None, **kwargs):
    # Imported here: this module is imported with the Celery app, before Django's apps are ready.
    from monitors.alerts.heartbeats import beat_started

    beat_started()


def add_periodic_tasks(sender, **kwargs):
    conf = sender.conf
    conf.beat_schedule = {**beat_schedule(), **(conf.beat_schedule or {})}
    if "monitors.tasks" not in (conf.include or ()):
        conf.include = [*(conf.include or ()), "monitors.tasks"]


def beat_schedule():
    """Jobwatch's periodic tasks; intervals are settings (read when beat starts)."""
    from monitors.conf import setting

    return {
        "jobwatch.sample_queues": {"task": "jobwatch.sample_queues", "schedule": float(setting("SAMPLE_INTERVAL"))},
        "jobwatch.run_detectors": {"task": "jobwatch.run_detectors", "schedule": float(setting("DETECT_INTERVAL"))},
        "jobwatch.send_alerts": {"task": "jobwatch.send_alerts", "schedule": float(setting("ALERT_INTERVAL"))},
        "jobwatch.roll_up_samples": {"task": "jobwatch.roll_up_samples", "schedule": float(setting("UPKEEP_INTERVAL"))},
        "jobwatch.prune_archive": {"task": "jobwatch.prune_archive", "schedule": float(setting("UPKEEP_INTERVAL"))},
        "jobwatch.prune_history": {"task": "jobwatch.prune_history", "schedule": float(setting("PRUNE_INTERVAL"))},
    }
