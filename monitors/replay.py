"""Replaying recorded jobs: each is sent again with its original arguments, task, queue and
priority, under a new task id that links back to it (`replay_of`).

A job is refused, with the reason, when replaying it would not be the same job:
- its arguments were redacted or truncated when recorded and the full ones were not kept
  (JobPayload keeps them for failed jobs; see KEEP_FAILED_PAYLOADS);
- a record it needs (its references) no longer exists — unless forced.

Idempotent per request: the new task id is derived from the original id and the request's key,
and stored (ReplayRecord) before the send, so the same request sent twice enqueues once.
"""

import json
import uuid
from collections import defaultdict
from dataclasses import dataclass, field

from django.apps import apps
from django.db import IntegrityError, transaction
from django.utils import timezone

from monitors.models import JobPayload, ReplayRecord
from monitors.recording.events import REPLAY_HEADER

# Fixed: the same original id and request key must give the same new id in every process.
REPLAY_NAMESPACE = uuid.UUID("5b0c9e4e-37a1-4c53-9d0e-6a0f3f1e2d7b")


@dataclass
class Verdict:
    task_id: str
    task_name: str
    queue: str
    priority: int | None
    args: list | None = None
    kwargs: dict | None = None
    refusal: str = ""
    missing: list = field(default_factory=list)

    @property
    def allowed(self):
        return not self.refusal


def new_task_id(original_task_id, request_key):
    return str(uuid.uuid5(REPLAY_NAMESPACE, f"{original_task_id}\n{request_key}"))


def judge(jobs, force=False):
    """A Verdict per job (in order): the arguments to send, or why not."""
    jobs = list(jobs)
    payloads = dict(JobPayload.objects.filter(task_id__in=[job.task_id for job in jobs]).values_list("task_id", "body"))
    missing = missing_references(jobs)
    verdicts = []
    for job in jobs:
        verdict = Verdict(job.task_id, job.task_name, job.queue, job.priority)
        verdicts.append(verdict)
        if not job.task_name:
            verdict.refusal = "its task name was never recorded"
            continue
        if job.task_id in payloads:
            verdict.args, verdict.kwargs = json.loads(payloads[job.task_id])
        elif job.payload_complete is False:
            verdict.refusal = ("its arguments were redacted or truncated when it was recorded, and the full ones were "
                               "not kept (they are kept for failed jobs only): replaying it would not be the same job")
            continue
        elif job.args is None and job.kwargs is None:
            verdict.refusal = "its arguments were never recorded"
            continue
        else:
            verdict.args, verdict.kwargs = list(job.args or []), dict(job.kwargs or {})
        verdict.missing = missing.get(job.task_id, [])
        if verdict.missing and not force:
            gone = ", ".join(f"{ref['model']} {ref['pk']}" for ref in verdict.missing)
            verdict.refusal = f"the record it needs no longer exists ({gone}); replay with force to send it anyway"
    return verdicts


def missing_references(jobs):
    """{task_id: [references whose row is gone]}, one query per model."""
    wanted = defaultdict(set)
    for job in jobs:
        for ref in job.references or []:
            if isinstance(ref, dict) and ref.get("model") and ref.get("pk") is not None:
                wanted[ref["model"]].add(ref["pk"])
    existing = {}
    for label, pks in wanted.items():
        try:
            model = apps.get_model(label)
        except (LookupError, ValueError):
            existing[label] = None  # a model this site does not have: cannot tell, do not refuse
            continue
        field_ = model._meta.pk
        cleaned = set()
        for pk in pks:
            try:
                cleaned.add(field_.to_python(pk))
            except Exception:
                continue
        existing[label] = {str(pk) for pk in model._default_manager.filter(pk__in=cleaned).values_list("pk", flat=True)}
    missing = defaultdict(list)
    for job in jobs:
        for ref in job.references or []:
            if not isinstance(ref, dict):
                continue
            found = existing.get(ref.get("model"))
            if found is not None and str(ref.get("pk")) not in found:
                missing[job.task_id].append(ref)
    return missing


def send(app, verdict, request_key, action=None):
    """Send one allowed replay. Returns (new task id, "sent" | "already sent")."""
    new_id = new_task_id(verdict.task_id, request_key)
    record = claim(verdict.task_id, request_key, new_id, action)
    if record.sent_at is not None:
        return new_id, "already sent"
    options = {"task_id": new_id, "headers": {REPLAY_HEADER: verdict.task_id}}
    if verdict.queue:
        options["queue"] = verdict.queue
    if verdict.priority is not None:
        options["priority"] = verdict.priority
    app.send_task(verdict.task_name, args=verdict.args, kwargs=verdict.kwargs, **options)
    ReplayRecord.objects.filter(pk=record.pk).update(sent_at=timezone.now())
    return new_id, "sent"


def claim(original_task_id, request_key, new_id, action):
    """The request's record for this job, created if it is the first time. A request retried
    after a crash between claim and send finds its record unsent and sends it (under the same
    new id, so at worst the broker holds the same task id twice, which the recorder shows as one
    job)."""
    try:
        with transaction.atomic():
            return ReplayRecord.objects.create(
                original_task_id=original_task_id, request_key=request_key, new_task_id=new_id, action=action,
                created_at=timezone.now(),
            )
    except IntegrityError:
        return ReplayRecord.objects.get(original_task_id=original_task_id, request_key=request_key)
