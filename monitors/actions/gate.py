"""The gate every change passes: the permission check and the audit log (ActionLog) around the
work, the size cap, and the hand-off of a large set to a background task. The verbs themselves
(replay, purge, discard, force a circuit, acknowledge) live beside this module and are imported
from `monitors.actions`.

- Every call is audited, allowed or not: a refusal is logged as refused and raised as
  ActionRefused (a PermissionDenied, so views answer 403).
- `dry_run=True` changes nothing and returns what would happen: how many match and a sample.
- A set larger than ACTION_INLINE_LIMIT runs as a background task (`jobwatch.run_action`) in
  batches; its ActionLog shows the progress (matched, succeeded, failed) while it runs. A set
  larger than ACTION_MAX_ITEMS is refused unless `allow_large=True`. `run_here=True` runs any
  size in the calling process (the management commands: the command is the background run).
"""

import contextlib
from dataclasses import dataclass, field

from celery import current_app
from django.core.exceptions import PermissionDenied
from django.utils import timezone

from monitors.conf import setting
from monitors.models import ActionLog
from monitors.replica import primary_reads

# Action → the Django permission it needs.
PERMISSIONS = {
    "force_circuit": "monitors.force_circuit",
    "replay_jobs": "monitors.replay_jobs",
    "discard_jobs": "monitors.discard_jobs",
    "purge_messages": "monitors.purge_messages",
    "restore_messages": "monitors.restore_messages",
    "acknowledge_incident": "monitors.acknowledge_incident",
    "pause_queue": "monitors.pause_queues",
    "cancel_jobs": "monitors.cancel_jobs",
    "resume_queue": "monitors.pause_queues",
    "run_periodic_task": "monitors.run_periodic_tasks",
    "enable_periodic_task": "monitors.switch_periodic_tasks",
    "disable_periodic_task": "monitors.switch_periodic_tasks",
}
SURFACES = ("dashboard", "admin", "command", "api")
REFUSALS_KEPT = 50
# The background task that carries on an action (monitors/tasks.py). Sent by name, as beat sends
# a periodic task: the gate does not import the task module, which imports the actions.
RUN_ACTION_TASK = "jobwatch.run_action"


class ActionRefused(PermissionDenied):
    """The user lacks the permission for this action (the refusal is in the audit log);
    `permission` names it, so the 403 can say what to ask for."""

    def __init__(self, message, permission=""):
        super().__init__(message)
        self.permission = permission


class TooLarge(ValueError):
    """More items match than ACTION_MAX_ITEMS, and the caller did not say to go ahead anyway."""


@dataclass
class ActionResult:
    log: ActionLog
    matched: int | None = None
    sample: list = field(default_factory=list)
    background: bool = False
    complete_count: bool = True  # False: the count covers only what could be looked at
    warning: str = ""


def allowed(user, action):
    return bool(user and user.is_active and user.is_staff and user.has_perm(PERMISSIONS[action]))


@contextlib.contextmanager
def audited(user, action, target, parameters, surface, dry_run=False):
    """Check the permission and log the action around its work. The body fills in `matched`,
    `succeeded` and `failed` on the yielded ActionLog; an exception marks it failed (and is
    re-raised), otherwise it ends succeeded, or previewed for a dry run."""
    if surface not in SURFACES:
        raise ValueError(f"unknown surface {surface!r}")
    log = ActionLog(
        at=timezone.now(), user=user if getattr(user, "pk", None) else None, username=getattr(user, "username", "") or "",
        surface=surface, action=action, target=str(target)[:400], parameters=parameters, dry_run=dry_run,
        outcome=ActionLog.Outcome.RUNNING,
    )
    if not allowed(user, action):
        log.outcome = ActionLog.Outcome.REFUSED
        log.finished_at = log.at
        log.error = f"{log.username or 'anonymous'} lacks the permission {PERMISSIONS[action]}"
        log.save()
        raise ActionRefused(log.error, permission=PERMISSIONS[action])
    log.save()
    try:
        # The work reads the primary, never a replica (monitors/replica.py): an action acts on
        # what is there now, not on what was there a moment ago.
        with primary_reads():
            yield log
    except Exception as error:
        fail(log, error)
        raise
    if getattr(log, "handed_off", False):
        log.save()  # still running: the background task finishes it
        return
    finish(log, dry_run)


def finish(log, dry_run=False):
    log.outcome = ActionLog.Outcome.PREVIEWED if dry_run else (
        ActionLog.Outcome.FAILED if log.failed and not log.succeeded else ActionLog.Outcome.SUCCEEDED)
    log.finished_at = timezone.now()
    log.save()


def fail(log, error):
    log.outcome = ActionLog.Outcome.FAILED
    log.error = f"{type(error).__name__}: {error}"[:5000]
    log.finished_at = timezone.now()
    log.save()


def progress(log):
    """Write a running action's counts, for the UI to poll."""
    ActionLog.objects.filter(pk=log.pk).update(matched=log.matched, succeeded=log.succeeded, failed=log.failed)


def check_size(count, allow_large, what):
    cap = setting("ACTION_MAX_ITEMS")
    if count > cap and not allow_large:
        raise TooLarge(f"{count} {what} match, more than the cap of {cap}: narrow the selection, or go ahead "
                       "explicitly (allow_large / --allow-large)")


def hand_off(log):
    """Run the rest as a background task; the log stays 'running' until it finishes."""
    log.handed_off = True
    log.save()
    current_app.send_task(RUN_ACTION_TASK, args=[log.pk])


def runs_inline(count):
    return count <= setting("ACTION_INLINE_LIMIT")


def chunked(items, size):
    for start in range(0, len(items), size):
        yield items[start : start + size]
