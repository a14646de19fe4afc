"""Purging messages from a broker queue, archive first, and restoring them.

Which messages: the whole queue, one task's, a set of task ids (a finding's orphans), or the
messages picked in the peek view (by key: a hash of their exact bytes, which also identifies a
message that cannot be decoded). The broker adapter does the taking (monitors/brokers/*.take):
every batch is written to ArchivedMessage and committed before it is removed from the broker.
"""

import base64
import hashlib
from dataclasses import dataclass, field

from django.db import transaction
from django.db.models import F, Q
from django.db.models.functions import Mod
from django.utils import timezone

from monitors.actions.gate import ActionResult, audited, check_size, chunked, hand_off, progress, runs_inline
from monitors.brokers import PeekUnavailable, open_broker
from monitors.conf import setting
from monitors.models import QUEUED_STATES, ArchivedMessage, JobExecution, JobState
from monitors.recording.events import FINISHED_STAGE, STAGES


# Where a queue cannot be scanned without taking its messages (RabbitMQ), a preview looks at
# this many from the head.
PREVIEW_PEEK = 1000


def message_key(raw):
    """A message's identity for picking: the hash of its exact bytes."""
    data = raw.encode() if isinstance(raw, str) else raw
    return hashlib.sha256(data).hexdigest()[:24]


@dataclass
class MessageSelection:
    everything: bool = False
    task: str = ""
    task_ids: set = field(default_factory=set)
    keys: set = field(default_factory=set)

    def __post_init__(self):
        if not (self.everything or self.task or self.task_ids or self.keys):
            raise ValueError("say which messages: everything, a task name, task ids, or picked messages")

    def matches(self, message):
        if self.everything:
            return True
        if self.task and message.task_name == self.task:
            return True
        if self.task_ids and message.task_id in self.task_ids:
            return True
        return bool(self.keys) and message.raw is not None and message_key(message.raw) in self.keys

    def describe(self):
        if self.everything:
            return {"everything": True}
        described = {}
        if self.task:
            described["task"] = self.task
        if self.task_ids:
            described["task_ids"] = sorted(self.task_ids)[:1000]
        if self.keys:
            described["keys"] = sorted(self.keys)[:1000]
        return described

    @classmethod
    def from_description(cls, described):
        return cls(everything=bool(described.get("everything")), task=described.get("task", ""),
                   task_ids=set(described.get("task_ids", [])), keys=set(described.get("keys", [])))


def encode_raw(raw):
    data = raw.encode() if isinstance(raw, str) else bytes(raw)
    try:
        return data.decode("utf-8"), "text"
    except UnicodeDecodeError:
        return base64.b64encode(data).decode(), "base64"


def decode_raw(archived):
    return base64.b64decode(archived.raw) if archived.raw_encoding == "base64" else archived.raw.encode()


class Archiver:
    """The archive and confirm callbacks of one purge, counting as it goes. `taken_state`: what
    the jobs whose messages it removed now read (purged; revoked for a cancel)."""
    def __init__(self, broker, queue, action=None, on_batch=None, taken_state=JobState.PURGED):
        self.broker, self.queue, self.action, self.taken_state = broker, queue, action, taken_state
        self.on_batch = on_batch or (lambda archiver: None)
        self.rows = {}
        self.archived = self.removed = self.gone = 0

    def archive(self, takens):
        now = timezone.now()
        rows = []
        for taken in takens:
            text, encoding = encode_raw(taken.raw)
            rows.append(ArchivedMessage(
                action=self.action, archived_at=now, broker=self.broker, queue=self.queue, priority=taken.priority,
                task_id=taken.message.task_id[:255], task_name=taken.message.task_name[:255], raw=text,
                raw_encoding=encoding, size=len(taken.raw), note="archived; removal from the queue not confirmed",
            ))
        with transaction.atomic():  # committed before the adapter removes anything
            created = ArchivedMessage.objects.bulk_create(rows)
        for taken, row in zip(takens, created, strict=True):
            self.rows[id(taken)] = row
        self.archived += len(rows)

    def confirm(self, takens):
        now = timezone.now()
        removed = [self.rows.pop(id(taken)).pk for taken in takens if taken.removed]
        gone = [(self.rows.pop(id(taken)).pk, taken.note) for taken in takens if not taken.removed]
        if removed:
            ArchivedMessage.objects.filter(pk__in=removed).update(removed_at=now, note="")
            mark_taken([taken.message.task_id for taken in takens if taken.removed and taken.message.task_id],
                       self.taken_state)
        for pk, note in gone:
            ArchivedMessage.objects.filter(pk=pk).update(note=note[:300])
        self.removed += len(removed)
        self.gone += len(gone)
        self.on_batch(self)


def mark_taken(task_ids, state=JobState.PURGED):
    """The jobs whose messages were taken off their queue now read `state` (purged, or revoked
    for a cancel), not "enqueued" forever. Their progress moves to the end of the attempt they
    were waiting for, so that an event of that attempt recorded late cannot make them "enqueued"
    again; a restore moves it back."""
    JobExecution.objects.filter(task_id__in=task_ids, state__in=QUEUED_STATES).update(
        state=state, progress=F("progress") - Mod("progress", STAGES) + FINISHED_STAGE)


def mark_restored(task_ids):
    """Restored messages are waiting in their queues again: their jobs read "enqueued", at the
    start of the attempt, so that the worker's events for it are recorded over it — purged jobs,
    and cancelled ones that were taken off their queue before they ran."""
    back = Q(state=JobState.PURGED) | Q(state=JobState.REVOKED, cancelled_at__isnull=False, started_at__isnull=True)
    JobExecution.objects.filter(back, task_id__in=task_ids).update(
        state=JobState.ENQUEUED, progress=F("progress") - Mod("progress", STAGES), cancelled_at=None, cancelled_by="",
        cancel_reason="")


def purge_queue(adapter, queue, selection, action=None, batch=500, limit=None, on_batch=None,
                taken_state=JobState.PURGED):
    """Archive, then remove, the selected messages of `queue`. Returns the Archiver (counts)."""
    archiver = Archiver(adapter.kind, queue, action, on_batch, taken_state)
    adapter.take(queue, selection.matches, archiver.archive, archiver.confirm, batch=batch, limit=limit)
    return archiver


def preview_purge(adapter, queue, selection, sample=20, limit=None):
    """(how many match, a sample of them) without removing anything. On RabbitMQ, where a full
    read would take every message, only the messages the peek view can show are looked at."""
    matched, examples = 0, []
    try:
        messages = adapter.scan(queue, decode=True, clean=True)
        complete = True
    except PeekUnavailable:
        messages = adapter.peek(queue, 0, PREVIEW_PEEK)
        complete = len(messages) < PREVIEW_PEEK  # the peek reached the end of the queue
    for message in messages:
        if selection.matches(message):
            matched += 1
            if len(examples) < sample:
                examples.append(message)
        if limit is not None and matched >= limit:
            break
    return matched, examples, complete


def restore(adapter, archived_ids, action=None, batch=500):
    """Put archived messages back on their queues. Returns (restored, skipped): a message already
    restored, or never removed from its queue, is skipped (putting it back would duplicate it).

    Each batch is claimed (marked restored, under a row lock) before it is published, so two
    restores of the same messages cannot both send them; what fails to publish is given back.
    Rows are read a batch at a time: a big purge's archive is not loaded at once."""
    restored = skipped = 0
    ids = sorted(int(pk) for pk in archived_ids)
    for start in range(0, len(ids), batch):
        wanted = ids[start : start + batch]
        with transaction.atomic():
            claimed = list(ArchivedMessage.objects.select_for_update(skip_locked=True)
                           .filter(pk__in=wanted, restored_at__isnull=True, removed_at__isnull=False).order_by("pk"))
            ArchivedMessage.objects.filter(pk__in=[row.pk for row in claimed]).update(restored_at=timezone.now(), restored_by=action)
        skipped += len(wanted) - len(claimed)
        for position, row in enumerate(claimed):
            try:
                adapter.put_back(row.queue, decode_raw(row), row.priority)
            except Exception:
                unsent = [item.pk for item in claimed[position:]]
                ArchivedMessage.objects.filter(pk__in=unsent).update(restored_at=None, restored_by=None)
                raise
            restored += 1
        mark_restored([row.task_id for row in claimed if row.task_id])
    return restored, skipped


# -- the actions --------------------------------------------------------------------------------


def purge_messages(user, queue, selection, *, dry_run=False, surface="dashboard", allow_large=False, app=None,
                   limit=None, run_here=False):
    """Remove the selected messages (a MessageSelection) from `queue`, each archived first."""
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
