"""A job's page. It leads with what the operator came for: what went wrong (the error and the
service it came from), what happened to the job (purged, discarded, cancelled, waiting on a
circuit), and what to do (replay, discard, restore) — then where it belongs: its failure group,
the findings that name it, the jobs like it. The timeline, arguments, origin and chain follow,
and the traceback comes last."""

from datetime import timedelta

from django.db.models import Sum
from django.http import Http404
from django.utils import timezone

from monitors.models import QUEUED_STATES, ActionLog, ArchivedMessage, Finding, JobExecution, JobState, JobTally
from monitors.web.access import staff_only
from monitors.web.jobs import LIST_COLUMNS
from monitors.web.respond import respond

FAILURE_GROUP_WINDOW = timedelta(hours=24)
OPEN_FINDINGS_READ = 500  # open findings are few; read them all to match a job to them
RELATED_SHOWN = 10


CLOCK_SKEW = timedelta(hours=1)  # how far apart the clocks of the hosts that publish may be
SAME_SAVE_SPREAD = timedelta(days=1)  # a save's jobs: published in its transaction or at its commit


def earlier(job):
    jobs = JobExecution.objects.all()
    return jobs if job.enqueued_at is None else jobs.filter(enqueued_at__lte=job.enqueued_at + CLOCK_SKEW)


def later(job):
    jobs = JobExecution.objects.all()
    return jobs if job.enqueued_at is None else jobs.filter(enqueued_at__gte=job.enqueued_at - CLOCK_SKEW)


def same_save(job):
    jobs = JobExecution.objects.filter(origin_save=job.origin_save)
    if job.enqueued_at is not None:
        jobs = jobs.filter(enqueued_at__range=(job.enqueued_at - SAME_SAVE_SPREAD, job.enqueued_at + SAME_SAVE_SPREAD))
    return jobs


@staff_only
def job_detail(request, task_id):
    # The newest, should one task id have been published twice (on PostgreSQL each publish time
    # is a row of its own: see monitors/partitions.py).
    job = JobExecution.objects.filter(task_id=task_id).order_by("-enqueued_at", "-id").first()
    if job is None:
        raise Http404("No job with this task id was recorded.")
    context = {
        "job": job,
        "timeline": timeline(job),
        "failure_group": failure_group(job),
        "findings": related_findings(job),
        "similar": similar_filter(job),
        "purge": purge_of(job),
        "discard": discard_of(job),
        "cancellable": [*QUEUED_STATES, JobState.RECEIVED, JobState.STARTED],
        # Each bounded by when it can have been enqueued (a parent or original before this job,
        # children and replays after it, the jobs of one save at the same moment), with room for
        # the clocks of two hosts: over a day-partitioned history each reads only those days.
        "parent": earlier(job).filter(task_id=job.parent_id).first() if job.parent_id else None,
        "children": list(later(job).filter(parent_id=task_id).order_by("id")[:100]),
        "replays": list(later(job).filter(replay_of=task_id).order_by("id")[:100]),
        "replay_of": earlier(job).filter(task_id=job.replay_of).first() if job.replay_of else None,
        "same_save": list(same_save(job).exclude(task_id=task_id).only(*LIST_COLUMNS).order_by("id")[:50])
                     if job.origin_save else [],
    }
    return respond(request, "jobwatch/job.html", context, fragments=["job-state"],
                   api=["job", "timeline", "failure_group", "findings", "similar", "purge", "discard", "parent",
                        "children", "replays", "replay_of", "same_save"])


def failure_group(job):
    """The Failures page's group this failed job belongs to (task and exception class), with how
    many failures it counted in the last day; None for a job that did not fail."""
    if job.state != JobState.FAILED or not job.exception_type:
        return None
    exception = job.exception_type.rsplit(".", 1)[-1]  # the tallies name a class, as the page does
    since = timezone.now() - FAILURE_GROUP_WINDOW
    failures = JobTally.objects.filter(metric="failed", task_name=job.task_name, exception=exception,
                                       minute__gte=since).aggregate(total=Sum("count"))["total"] or 0
    return {"task": job.task_name, "exception": exception, "failures_24h": failures}


def facets(job):
    """What findings name that this job is part of (monitors/alerts/correlation.py's keys)."""
    named = {f"task:{job.task_name}", f"queue:{job.queue}"}
    for service in (job.circuit, job.error_target):
        if service:
            named.add(f"service:{service}")
    if job.origin_receiver:
        named.add(f"receiver:{job.origin_receiver}")
    if job.origin_model:
        named.add(f"saves:{job.origin_model}")
    return named


def related_findings(job):
    """Open findings that list this job, then those about its task, queue, service, receiver or
    model — the ones naming the job first."""
    named, about = [], []
    wanted = facets(job)
    for finding in Finding.objects.filter(status=Finding.Status.OPEN).order_by("-last_seen")[:OPEN_FINDINGS_READ]:
        if job.task_id in finding.task_ids():
            named.append(finding)
        elif wanted & set(finding.keys or ()):
            about.append(finding)
    for finding in named:
        finding.names_this_job = True
    return (named + about)[:RELATED_SHOWN]


def similar_filter(job):
    """The jobs list's filter for jobs like this one: same task, and for a failure the same
    exception; for other jobs the same state."""
    if not job.task_name:
        return None
    if job.state == JobState.FAILED and job.exception_type:
        return {"task": job.task_name, "state": "failed", "exception": job.exception_type.rsplit(".", 1)[-1]}
    return {"task": job.task_name, "state": job.state}


def purge_of(job):
    """For a purged job: the archived message (restorable or not) and the purge that took it."""
    if job.state != JobState.PURGED:
        return None
    archived = (ArchivedMessage.objects.filter(task_id=job.task_id).select_related("action")
                .order_by("-archived_at").first())
    return {"archived": archived, "action": archived.action if archived else None,
            "restorable": bool(archived and archived.removed_at and not archived.restored_at)}


def discard_of(job):
    """For a discarded job: the audit log entry of the discard, when it can still be found."""
    if job.discarded_at is None:
        return None
    # The discard that ran when the job was marked: it began before and finished after.
    entry = (ActionLog.objects.filter(action="discard_jobs", outcome=ActionLog.Outcome.SUCCEEDED, dry_run=False,
                                      at__lte=job.discarded_at, finished_at__gte=job.discarded_at).order_by("-at").first())
    return {"at": job.discarded_at, "action": entry}


def timeline(job):
    """[(when, what, bad)] of the moments the execution table holds for a job, in order."""
    moments = [
        (job.enqueued_at, "enqueued" + (f" on {job.queue}" if job.queue else ""), False),
        (job.origin_committed_at, "its transaction committed", False),
        (job.eta, "due (eta)", False),
        (job.received_at, f"received by {job.worker}" if job.worker else "received", False),
        (job.started_at, "started" + (f" (attempt {job.retries + 1})" if job.retries else ""), False),
    ]
    if job.finished_at:
        bad = job.state in (JobState.FAILED, JobState.REVOKED, JobState.REJECTED)
        runtime = f" after {job.runtime:.3f} s" if job.runtime is not None else ""
        moments.append((job.finished_at, f"{job.get_state_display()}{runtime}", bad))
    events = [{"at": at, "what": what, "bad": bad} for at, what, bad in moments if at]
    events.sort(key=lambda event: event["at"])
    if job.retries:
        events.append({"at": None, "what": f"retried {job.retries} time{'s' if job.retries != 1 else ''}", "bad": True})
    if job.circuit_waits:
        events.append({"at": None, "what": f"waited {job.circuit_waits} time{'s' if job.circuit_waits != 1 else ''} for the {job.circuit} circuit", "bad": False})
    return events
