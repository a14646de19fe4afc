"""Running a periodic task now, by hand: beat's own message for the entry — its task, with its
arguments as the schedule holds them (never the redacted ones a page shows), to its queue — sent
once, outside the schedule, whose runs go on as before. The message names the entry (the header
django-celery-beat uses) and who ran it, so the recorder files the job among the entry's runs
as a manual one (origin "manual"), which the periodic detector leaves out of the schedule's
reckoning.

For django-celery-beat's entries, enabling and disabling too: the switch in its table that its
DatabaseScheduler obeys (the app's beat_schedule is code, and stays as deployed)."""

from celery import current_app
from django.apps import apps

from monitors.actions.gate import ActionResult, audited
from monitors.periodic.schedule import sendable
from monitors.recording.signals import MANUAL_RUN_HEADER, PERIODIC_TASK_HEADER


def run_periodic_now(user, name, *, surface="dashboard", dry_run=False, app=None):
    """Send entry `name`'s task now. Returns an ActionResult (the task id in its log's
    parameters); raises LookupError when no entry has that name."""
    app = app or current_app
    with audited(user, "run_periodic_task", name, {"entry": name}, surface, dry_run) as log:
        message = sendable(name, app)
        if message is None:
            raise LookupError(f"no periodic task named {name!r}")
        log.matched = 1
        log.parameters = {"entry": name, "task": message["task"], "queue": message["queue"]}
        if dry_run:
            return ActionResult(log=log, matched=1)  # no sample: the arguments may hold secrets
        sent = app.send_task(message["task"], args=message["args"], kwargs=message["kwargs"],
                             queue=message["queue"] or None,
                             headers={PERIODIC_TASK_HEADER: name, MANUAL_RUN_HEADER: f"{log.username} ({surface})"})
        log.parameters["task_id"] = sent.id
        log.succeeded = 1
        return ActionResult(log=log, matched=1)


class NotSwitchable(ValueError):
    """The entry lives in the Celery app's beat_schedule (code), which only a deploy changes."""


def set_periodic_enabled(user, name, enabled, *, surface="dashboard", dry_run=False):
    """Enable or disable django-celery-beat entry `name` — each undoes the other. Saved through the
    model (not a queryset update), so django-celery-beat's own signal marks the schedule changed and
    a running DatabaseScheduler picks it up at its next tick. Raises LookupError when no entry has
    that name, NotSwitchable for an entry of the app's beat_schedule."""
    action = "enable_periodic_task" if enabled else "disable_periodic_task"
    with audited(user, action, name, {"entry": name, "enabled": enabled}, surface, dry_run) as log:
        row = database_entry(name)
        if row is None:
            if sendable(name) is not None:
                raise NotSwitchable(f"{name} is in the Celery app's beat_schedule, which only a deploy changes; "
                                    "entries can be enabled and disabled where django-celery-beat keeps them")
            raise LookupError(f"no periodic task named {name!r}")
        log.matched = 1
        log.parameters = {"entry": name, "enabled": enabled, "was_enabled": row.enabled, "task": row.task}
        if dry_run or row.enabled == enabled:
            log.succeeded = 0 if dry_run else 1
            return ActionResult(log=log, matched=1)
        row.enabled = enabled
        # The whole row, as django-celery-beat's admin saves it: its save() clears last_run_at on
        # a disable (so that enabling does not send a catch-up run at once) and date_changed moves.
        row.save()
        log.succeeded = 1
        return ActionResult(log=log, matched=1)


def database_entry(name):
    """django-celery-beat's PeriodicTask named `name`, or None (also where it is not installed)."""
    if not apps.is_installed("django_celery_beat"):
        return None
    # Optional: only where django-celery-beat is installed.
    from django_celery_beat.models import PeriodicTask

    return PeriodicTask.objects.filter(name=name).first()
