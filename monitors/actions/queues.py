"""Pausing and resuming a queue on every worker (monitors/pausing.py says how the workers follow).

The pause is a row (QueuePause), so that a worker that starts later, or one the broadcast did not
reach, follows it too; the broadcast (`jobwatch_sync_pauses`) makes the running workers follow it
at once, and their replies say which of them stopped or started. Nothing is taken off the queue:
its messages wait, and a resume lets the workers drain them."""

import logging

from celery import current_app
from django.db import IntegrityError, transaction
from django.utils import timezone

from monitors.actions.gate import ActionResult, audited
from monitors.integration import SYNC_PAUSES_COMMAND
from monitors.models import QueuePause

logger = logging.getLogger("monitors.actions")
REPLY_SECONDS = 2.0  # how long a pause waits for the workers' answers


def pause_queue(user, queue, *, reason="", surface="dashboard", dry_run=False, app=None):
    """Stop every worker consuming `queue` until it is resumed."""
    queue = clean_name(queue)
    with audited(user, "pause_queue", f"queue {queue}", {"queue": queue, "reason": reason}, surface, dry_run) as log:
        log.matched = 1
        if dry_run:
            return ActionResult(log, 1)
        try:
            with transaction.atomic():
                QueuePause.objects.create(queue=queue, paused_at=timezone.now(), paused_by=log.username,
                                          reason=reason[:300], action=log)
        except IntegrityError:
            pause = QueuePause.objects.filter(queue=queue).first()
            log.parameters = {**log.parameters, "already_paused_by": getattr(pause, "paused_by", "")}
        return told(log, app, "stopped")


def resume_queue(user, queue, *, surface="dashboard", dry_run=False, app=None):
    """Let the workers that a pause stopped consume `queue` again."""
    queue = clean_name(queue)
    with audited(user, "resume_queue", f"queue {queue}", {"queue": queue}, surface, dry_run) as log:
        pause = QueuePause.objects.filter(queue=queue).first()
        log.matched = 1 if pause else 0
        if dry_run or pause is None:
            return ActionResult(log, log.matched, warning="" if pause else f"{queue} is not paused")
        log.parameters = {**log.parameters, "paused_by": pause.paused_by, "paused_at": pause.paused_at.isoformat()}
        pause.delete()
        return told(log, app, "started")


def told(log, app, verb):
    """Broadcast the change; note which workers acted on it. A broker that cannot broadcast is not
    a failure: every worker checks again within QUEUE_PAUSE_CHECK_SECONDS."""
    queue = log.parameters["queue"]
    try:
        replies = (app or current_app).control.broadcast(SYNC_PAUSES_COMMAND, reply=True, timeout=REPLY_SECONDS)
    except Exception as error:  # noqa: BLE001 (the row is what counts; the broadcast only hurries it)
        logger.warning("Jobwatch could not broadcast the %s of %s: %s", log.action, queue, error)
        log.parameters = {**log.parameters, "broadcast_error": f"{type(error).__name__}: {error}"[:300]}
        replies = []
    acted = sorted(worker for reply in replies or [] for worker, answer in reply.items()
                   if isinstance(answer, dict) and queue in (answer.get(verb) or []))
    log.parameters = {**log.parameters, "workers": acted, "workers_answering": len(replies or [])}
    log.succeeded = 1
    return ActionResult(log, 1)


def clean_name(queue):
    queue = str(queue or "").strip()
    if not queue or len(queue) > 255 or "\x00" in queue:
        raise ValueError("say which queue: a name of at most 255 characters")
    return queue
