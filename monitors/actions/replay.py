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

from celery import current_app
from django.apps import apps
from django.utils import timezone

from monitors.actions.gate import REFUSALS_KEPT, ActionResult, audited, check_size, hand_off, progress, runs_inline
from monitors.conf import setting
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


def send_batch(app, verdicts, request_key, action=None):
    """Send a batch of allowed replays. Returns [(verdict, new task id, outcome)], the outcome
    "sent", "already sent" (this request sent it before) or the exception that stopped it.

    The batch's ReplayRecords are created (or found) first, in one statement: a request sent
    again finds them and sends only what it had not sent. A crash between a send and its record
    being marked sent makes a retried request send it again under the same new id — at worst
    the broker holds that task id twice, which the recorder shows as one job."""
    now = timezone.now()
    wanted = {verdict.task_id: new_task_id(verdict.task_id, request_key) for verdict in verdicts}
    ReplayRecord.objects.bulk_create(
        [ReplayRecord(original_task_id=original, request_key=request_key, new_task_id=new_id, action=action, created_at=now)
         for original, new_id in wanted.items()],
        ignore_conflicts=True,
    )
    sent_before = set(
        ReplayRecord.objects.filter(request_key=request_key, original_task_id__in=list(wanted), sent_at__isnull=False)
        .values_list("original_task_id", flat=True)
    )
    outcomes, sent_now = [], []
    with app.producer_or_acquire() as producer:
        for verdict in verdicts:
            new_id = wanted[verdict.task_id]
            if verdict.task_id in sent_before:
                outcomes.append((verdict, new_id, "already sent"))
                continue
            try:
                app.send_task(verdict.task_name, args=verdict.args, kwargs=verdict.kwargs, producer=producer,
                              **send_options(verdict, new_id))
            except Exception as error:  # the broker refused or went away: this one is not sent
                outcomes.append((verdict, new_id, error))
                continue
            sent_now.append(verdict.task_id)
            outcomes.append((verdict, new_id, "sent"))
    ReplayRecord.objects.filter(request_key=request_key, original_task_id__in=sent_now).update(sent_at=timezone.now())
    return outcomes


def send_options(verdict, new_id):
    options = {"task_id": new_id, "headers": {REPLAY_HEADER: verdict.task_id}}
    if verdict.queue:
        options["queue"] = verdict.queue
    if verdict.priority is not None:
        options["priority"] = verdict.priority
    return options


# -- the action ----------------------------------------------------------------------------------


def replay_jobs(user, selection, *, force=False, dry_run=False, request_key=None, surface="dashboard",
                allow_large=False, app=None, run_here=False):
    """Re-enqueue the selected jobs (a JobSelection) with their original arguments under new task
    ids; see this module's docstring for what is refused and why. `request_key` makes a retried or
    doubled request enqueue each job once."""
    request_key = request_key or uuid.uuid4().hex
    parameters = {"selection": selection.describe(), "force": force, "request_key": request_key}
    with audited(user, "replay_jobs", selection.target(), parameters, surface, dry_run) as log:
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
