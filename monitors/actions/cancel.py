"""Cancelling jobs, by the safest means for where each one is:

- **waiting in a queue** (enqueued, retried, waiting on a circuit): taken off the queue as a
  purge takes it — archived first, then removed — so it never runs and can be restored. A revoke
  would only ask the workers alive now to drop it when it comes (they forget revoked ids when they
  restart, unless started with --statedb), and the message would stay in the queue;
- **held by a worker** (received: prefetched, or waiting for its eta), or waiting in a queue but
  not found there (a worker took it meanwhile): revoked — the worker drops it instead of running
  it; a worker started later does not know of the revoke;
- **running** (started), only when asked to terminate: revoked with SIGTERM, and with SIGKILL
  CANCEL_GRACE_SECONDS later if it still runs. Its work may be half done: terminate only what is
  safe to stop midway.

Every cancelled job's row says who cancelled it, when and why (cancelled_by, cancelled_at,
cancel_reason); the recorder records what the worker then did (revoked)."""

from celery import current_app
from django.db.models import Count
from django.utils import timezone

from monitors.actions.gate import ActionResult, audited, check_size
from monitors.actions.purge import MessageSelection, purge_queue
from monitors.brokers import BrokerUnavailable, open_broker
from monitors.conf import setting
from monitors.models import QUEUED_STATES, ArchivedMessage, JobExecution, JobState

HELD_STATES = (JobState.RECEIVED,)
RUNNING_STATES = (JobState.STARTED,)
KILL_TASK = "jobwatch.kill_cancelled"  # monitors/tasks.py: SIGKILL for what SIGTERM did not stop


def cancel_jobs(user, selection, *, reason="", terminate=False, dry_run=False, surface="dashboard", allow_large=False,
                app=None):
    """Cancel the selected jobs (a JobSelection) that have not finished; running ones only with
    terminate=True. The preview counts each kind and says what will be done to it."""
    reason = str(reason or "").strip()[:300]
    parameters = {"selection": selection.describe(), "reason": reason, "terminate": terminate}
    with audited(user, "cancel_jobs", selection.target(), parameters, surface, dry_run) as log:
        states = [*QUEUED_STATES, *HELD_STATES, *(RUNNING_STATES if terminate else ())]
        jobs = selection.queryset().filter(state__in=states)
        by_state = dict(jobs.values_list("state").annotate(n=Count("id")).order_by())
        plan = {"queued": sum(by_state.get(state, 0) for state in QUEUED_STATES),
                "held": sum(by_state.get(state, 0) for state in HELD_STATES),
                "running": sum(by_state.get(state, 0) for state in RUNNING_STATES)}
        left_running = 0 if terminate else selection.queryset().filter(state__in=RUNNING_STATES).count()
        log.matched = sum(plan.values())
        log.parameters = {**log.parameters, "plan": plan, "left_running": left_running}
        warning = (f"{left_running} running job{'s' if left_running != 1 else ''} will go on running: tick "
                   "\"terminate running jobs\" to stop them" if left_running else "")
        if dry_run:
            return ActionResult(log, log.matched, list(jobs.order_by("-id")[:20]), warning=warning)
        check_size(log.matched, allow_large, "jobs")
        run_cancel(log, jobs, reason, terminate, app or current_app)
        return ActionResult(log, log.matched, warning=warning)


def run_cancel(log, jobs, reason, terminate, app):
    targets = list(jobs.values_list("task_id", "state", "queue"))
    JobExecution.objects.filter(task_id__in=[task_id for task_id, _, _ in targets]).update(
        cancelled_at=timezone.now(), cancelled_by=f"{log.username} ({log.surface})", cancel_reason=reason)
    queued = {}
    for task_id, state, queue in targets:
        if state in QUEUED_STATES and queue:
            queued.setdefault(queue, set()).add(task_id)
    taken = take_off_queues(log, queued, app)
    revoke = [task_id for task_id, state, _ in targets if state not in RUNNING_STATES and task_id not in taken]
    running = [task_id for task_id, state, _ in targets if state in RUNNING_STATES]
    if revoke:
        app.control.revoke(revoke)
    if running and terminate:
        app.control.revoke(running, terminate=True, signal="SIGTERM")
        app.send_task(KILL_TASK, args=[running], countdown=setting("CANCEL_GRACE_SECONDS"))
    log.succeeded = len(taken) + len(revoke) + (len(running) if terminate else 0)
    log.parameters = {**log.parameters, "taken_off_queue": len(taken), "revoked": len(revoke),
                      "terminated": len(running) if terminate else 0}


def take_off_queues(log, queued, app):
    """Archive, then remove, the queued jobs' messages; the task ids removed."""
    if not queued:
        return set()
    try:
        adapter = open_broker(app)
    except BrokerUnavailable as error:
        log.error = f"the broker is unavailable ({error}): the queued jobs were revoked instead"[:5000]
        return set()
    try:
        for queue, task_ids in sorted(queued.items()):
            # Taken off the queue, it will not run: it reads revoked at once (a restore makes it
            # enqueued again).
            purge_queue(adapter, queue, MessageSelection(task_ids=task_ids), action=log,
                        batch=setting("ACTION_BATCH_SIZE"), taken_state=JobState.REVOKED)
    except BrokerUnavailable as error:
        log.error = f"the broker went away ({error}): the jobs not taken off their queue were revoked instead"[:5000]
    finally:
        adapter.close()
    return set(ArchivedMessage.objects.filter(action=log, removed_at__isnull=False).values_list("task_id", flat=True))


def kill_if_still_running(task_ids, app=None):
    """SIGKILL for the cancelled jobs SIGTERM did not stop (the follow-up task). Returns them."""
    still = list(JobExecution.objects.filter(task_id__in=task_ids, state__in=RUNNING_STATES)
                 .values_list("task_id", flat=True))
    if still:
        (app or current_app).control.revoke(still, terminate=True, signal="SIGKILL")
    return still
