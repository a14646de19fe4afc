"""Running a periodic task now, by hand: beat's own message for the entry — its task, with its
arguments as the schedule holds them (never the redacted ones a page shows), to its queue — sent
once, outside the schedule, whose runs go on as before. The message names the entry (the header
django-celery-beat uses) and who ran it, so the recorder files the job among the entry's runs
as a manual one (origin "manual"), which the periodic detector leaves out of the schedule's
reckoning."""

from celery import current_app

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
