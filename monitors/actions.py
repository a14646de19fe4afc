"""The only code that changes anything: every surface (dashboard, admin, management commands)
calls these functions, which check the permission, write the audit log (ActionLog), and then act.

- Every call is audited, allowed or not: a refusal is logged as refused and raised as
  ActionRefused (a PermissionDenied, so views answer 403).
- `dry_run=True` changes nothing and returns what would happen: how many match and a sample.
- A set larger than ACTION_INLINE_LIMIT runs as a background task (`jobwatch.run_action`) in
  batches; its ActionLog shows the progress (matched, succeeded, failed) while it runs. A set
  larger than ACTION_MAX_ITEMS is refused unless `allow_large=True`. `run_here=True` runs any
  size in the calling process (the management commands: the command is the background run).
"""

import contextlib
import logging
import uuid
from dataclasses import dataclass, field

from django.core.exceptions import PermissionDenied
from django.utils import timezone

from monitors.conf import setting
from monitors.models import ActionLog, ArchivedMessage

logger = logging.getLogger("monitors.actions")

# Action → the Django permission it needs.
PERMISSIONS = {
    "force_circuit": "monitors.force_circuit",
    "replay_jobs": "monitors.replay_jobs",
    "discard_jobs": "monitors.discard_jobs",
    "purge_messages": "monitors.purge_messages",
    "restore_messages": "monitors.restore_messages",
    "acknowledge_incident": "monitors.acknowledge_incident",
}
SURFACES = ("dashboard", "admin", "command", "api")
REFUSALS_KEPT = 50


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
    from monitors.tasks import run_action

    log.handed_off = True
    log.save()
    run_action.delay(log.pk)


def runs_inline(count):
    return count <= setting("ACTION_INLINE_LIMIT")


# -- circuits ------------------------------------------------------------------------------------

CIRCUIT_CHANGES = {"open": "forced_open", "close": "forced_closed", "reset": "closed"}


def force_circuit(user, name, change, *, reason="", surface="dashboard", dry_run=False):
    """Force circuit `name` open ("open": no job calls the service, jobs wait), closed ("close":
    every call goes through whatever fails), or "reset" it (closed, counters cleared, the breaker
    decides again). Returns the circuit's state after the change (before it, for a dry run)."""
    from monitors.circuits import shared_store
    from monitors.circuits.machine import force
    from monitors.circuits.status import policy_of, state_of
    from monitors.models import Circuit

    if change not in CIRCUIT_CHANGES:
        raise ValueError(f"a circuit can be forced open, forced closed or reset, not {change!r}")
    parameters = {"change": change, "reason": reason}
    with audited(user, "force_circuit", name, parameters, surface, dry_run) as log:
        row = Circuit.objects.filter(name=name).first()
        if row is None:
            raise LookupError(f"no circuit named {name!r}; circuits appear once a process has used them")
        store = shared_store()
        log.matched = 1
        if dry_run:
            return store.read(name) or state_of(row)
        policy = policy_of(row)
        actor = f"{log.username} ({surface})"
        now = timezone.now()
        _, transitions, state = store.update(
            name, policy, lambda current: (None, force(current, policy, now, CIRCUIT_CHANGES[change], actor, reason))
        )
        log.succeeded = 1
        logger.warning("Circuit %s: %s", name, transitions[0].cause)
        return state


# -- replay --------------------------------------------------------------------------------------


def replay_jobs(user, selection, *, force=False, dry_run=False, request_key=None, surface="dashboard",
                allow_large=False, app=None, run_here=False):
    """Re-enqueue the selected jobs (a JobSelection) with their original arguments under new task
    ids; see monitors/replay.py for what is refused and why. `request_key` makes a retried or
    doubled request enqueue each job once."""
    from monitors.replay import judge

    request_key = request_key or uuid.uuid4().hex
    parameters = {"selection": selection.describe(), "force": force, "request_key": request_key}
    with audited(user, "replay_jobs", describe_target(selection), parameters, surface, dry_run) as log:
        # The jobs that match now, and no others: a replay's own jobs match a filter too (same
        # task, same queue), and must not be replayed by the run that sends them.
        last_id = selection.queryset().order_by("-id").values_list("id", flat=True).first() or 0
        log.parameters = {**parameters, "up_to_id": last_id}
        count = selection.queryset().filter(id__lte=last_id).count()
        log.matched = count
        if dry_run:
            sample = judge(selection.queryset().order_by("-id")[:20], force)
            return ActionResult(log, count, sample)
        check_size(count, allow_large, "jobs")
        if not run_here and not runs_inline(count):
            hand_off(log)
            return ActionResult(log, count, background=True)
        run_replay(log, selection, force, request_key, app, up_to_id=last_id)
        return ActionResult(log, count)


def run_replay(log, selection, force, request_key, app=None, up_to_id=None):
    from celery import current_app

    from monitors.replay import judge, send_batch

    app = app or current_app
    refusals, already, last_id = [], 0, 0
    jobs = selection.queryset().order_by("id")
    if up_to_id is not None:
        jobs = jobs.filter(id__lte=up_to_id)
    while True:
        batch = list(jobs.filter(id__gt=last_id)[: setting("ACTION_BATCH_SIZE")])
        if not batch:
            break
        last_id = batch[-1].id
        allowed_ones = []
        for verdict in judge(batch, force):
            if verdict.allowed:
                allowed_ones.append(verdict)
                continue
            log.failed += 1
            if len(refusals) < REFUSALS_KEPT:
                refusals.append({"task_id": verdict.task_id, "reason": verdict.refusal})
        for verdict, _, outcome in send_batch(app, allowed_ones, request_key, log):
            if isinstance(outcome, Exception):  # the broker refused or is down: count it, say why, go on
                log.failed += 1
                log.error = f"sending {verdict.task_id}: {type(outcome).__name__}: {outcome}"[:5000]
                continue
            log.succeeded += 1
            already += outcome == "already sent"
        progress(log)
    log.parameters = {**log.parameters, "refused": refusals, "already_sent": already}


def describe_target(selection):
    if selection.finding:
        return f"finding {selection.finding} ({len(selection.ids)} jobs)"
    if selection.ids:
        return f"{len(selection.ids)} jobs" if len(selection.ids) > 1 else f"job {selection.ids[0]}"
    return ", ".join(f"{key}={value}" for key, value in sorted(selection.filters.items()))


# -- discard (the history) ----------------------------------------------------------------------


def discard_jobs(user, selection, *, undo=False, dry_run=False, surface="dashboard", allow_large=False):
    """Hide failed jobs from the history (lists, detectors' windows keep them out), or bring them
    back with undo=True. Nothing is deleted: pruning by age removes them in its time."""
    parameters = {"selection": selection.describe(), "undo": undo}
    with audited(user, "discard_jobs", describe_target(selection), parameters, surface, dry_run) as log:
        jobs = selection.queryset(discarded=True) if undo else selection.queryset().filter(state="failed")
        log.matched = jobs.count()
        if dry_run:
            return ActionResult(log, log.matched, list(jobs.order_by("-id")[:20]))
        check_size(log.matched, allow_large, "jobs")
        log.succeeded = jobs.update(discarded_at=None if undo else timezone.now())
        return ActionResult(log, log.matched)


# -- purge and restore ---------------------------------------------------------------------------


def purge_messages(user, queue, selection, *, dry_run=False, surface="dashboard", allow_large=False, app=None,
                   limit=None, run_here=False):
    """Remove the selected messages (a MessageSelection) from `queue`, each archived first."""
    from monitors.brokers import open_broker
    from monitors.purge import preview_purge

    parameters = {"queue": queue, "messages": selection.describe()}
    if limit:
        parameters["limit"] = limit
    with audited(user, "purge_messages", f"queue {queue}", parameters, surface, dry_run) as log:
        adapter = open_broker(app)
        try:
            cap = None if allow_large else setting("ACTION_MAX_ITEMS") + 1
            matched, sample, complete = preview_purge(adapter, queue, selection, limit=min(filter(None, (cap, limit)), default=None))
            log.matched = matched
            warning = adapter.purge_warning
        finally:
            adapter.close()
        result = ActionResult(log, matched, sample, complete_count=complete, warning=warning)
        if dry_run:
            return result
        check_size(matched, allow_large, "messages")
        if not run_here and (not complete or not runs_inline(matched)):
            hand_off(log)
            result.background = True
            return result
        run_purge(log, queue, selection, app, limit)
        return result


def run_purge(log, queue, selection, app=None, limit=None):
    from monitors.brokers import open_broker
    from monitors.purge import purge_queue

    def on_batch(archiver):
        log.matched, log.succeeded, log.failed = archiver.archived, archiver.removed, archiver.gone
        progress(log)

    adapter = open_broker(app)
    try:
        archiver = purge_queue(adapter, queue, selection, action=log, batch=setting("ACTION_BATCH_SIZE"),
                               limit=limit, on_batch=on_batch)
    finally:
        adapter.close()
    log.matched, log.succeeded, log.failed = archiver.archived, archiver.removed, archiver.gone
    if archiver.gone:
        log.error = f"{archiver.gone} archived messages were gone from the queue before the purge removed them"


def restore_messages(user, archived_ids, *, dry_run=False, surface="dashboard", app=None):
    """Put archived messages back on their queues (each once)."""
    from monitors.brokers import open_broker
    from monitors.purge import restore

    ids = sorted({int(pk) for pk in archived_ids})
    parameters = {"archived_ids": ids}
    target = f"{len(ids)} archived messages" if len(ids) != 1 else f"archived message {ids[0]}"
    with audited(user, "restore_messages", target, parameters, surface, dry_run) as log:
        log.matched, sample = 0, []
        for chunk in chunked(ids, 10_000):  # SQLite caps the parameters of one statement
            restorable = ArchivedMessage.objects.filter(pk__in=chunk, restored_at__isnull=True, removed_at__isnull=False)
            log.matched += restorable.count()
            if len(sample) < 20:
                sample += list(restorable.order_by("pk")[: 20 - len(sample)])
        if dry_run:
            return ActionResult(log, log.matched, sample)
        adapter = open_broker(app)
        try:
            log.succeeded, skipped = restore(adapter, ids, action=log)
        finally:
            adapter.close()
        # Already restored, or never removed from the queue: not a failure, nothing to do.
        log.parameters = {**log.parameters, "skipped": skipped}
        return ActionResult(log, log.matched)


def chunked(items, size):
    for start in range(0, len(items), size):
        yield items[start : start + size]


# -- background runs -----------------------------------------------------------------------------


def resume(action_id):
    """Run (or carry on with) an action handed to the background. Safe to run again after a
    worker died midway: replays are idempotent per request key, and a purge takes only what is
    still queued."""
    from monitors.purge import MessageSelection
    from monitors.selection import JobSelection

    log = ActionLog.objects.filter(pk=action_id, outcome=ActionLog.Outcome.RUNNING).first()
    if log is None:
        return None
    parameters = log.parameters
    try:
        if log.action == "replay_jobs":
            log.succeeded = log.failed = 0
            selection = JobSelection.from_description(parameters["selection"])
            run_replay(log, selection, parameters.get("force", False), parameters["request_key"],
                       up_to_id=parameters.get("up_to_id"))
        elif log.action == "purge_messages":
            selection = MessageSelection.from_description(parameters["messages"])
            run_purge(log, parameters["queue"], selection, limit=parameters.get("limit"))
        else:
            raise ValueError(f"{log.action} does not run in the background")
    except Exception as error:
        fail(log, error)
        raise
    finish(log)
    return log


# -- incidents ------------------------------------------------------------------------------------


def acknowledge_incident(user, incident_id, *, snooze_seconds=None, surface="dashboard"):
    """Acknowledge an open incident (no more repeats; its resolve is still notified), or with
    `snooze_seconds` silence its repeats for that long."""
    from monitors.alerts.incidents import acknowledge, snooze
    from monitors.models import Incident

    parameters = {"incident": int(incident_id), "snooze_seconds": snooze_seconds}
    action = "acknowledge_incident"
    with audited(user, action, f"incident {incident_id}", parameters, surface) as log:
        incident = Incident.objects.get(pk=incident_id)
        log.matched = 1
        if snooze_seconds:
            snooze(incident, int(snooze_seconds))
        else:
            acknowledge(incident, log.username)
        log.succeeded = 1
        return ActionResult(log, 1)


def acknowledge_incidents(user, incident_ids, *, snooze_seconds=None, surface="dashboard"):
    """Acknowledge (or snooze) several incidents at once, each checked and audited on its own as
    acknowledge_incident does. The allowed ones are done; then, if any was refused, ActionRefused
    says how many and which permission is missing."""
    ids = list(dict.fromkeys(int(incident_id) for incident_id in incident_ids))
    results, refused = [], []
    for incident_id in ids:
        try:
            results.append(acknowledge_incident(user, incident_id, snooze_seconds=snooze_seconds, surface=surface))
        except ActionRefused as refusal:
            refused.append(refusal)
    if refused:
        raise ActionRefused(f"{len(refused)} of {len(ids)} incidents refused: {refused[0]}", permission=refused[0].permission)
    return results
