"""Orphans: jobs whose database record is missing, by task and cause (rolled back, ran before
commit, deleted after enqueue), from the orphans detector's open findings, with replay (forced:
the record is gone, so the operator says it is wanted anyway) and purge of those still queued."""

from collections import defaultdict

from monitors.models import Finding, JobExecution
from monitors.web.access import staff_only
from monitors.web.respond import respond

ORPHAN_KINDS = ("orphaned_jobs", "enqueue_in_transaction")
RESOLVED_SHOWN = 20
CAUSES = {"rolled_back": "rolled back", "ran_before_commit": "ran before commit",
          "deleted_after_enqueue": "record deleted after enqueue", "unknown": "record missing"}


@staff_only
def orphan_list(request):
    open_findings = list(Finding.objects.filter(status=Finding.Status.OPEN, kind__in=ORPHAN_KINDS).order_by("kind", "-count"))
    for finding in open_findings:
        finding.task, _, finding.cause = finding.subject.rpartition(":")
        finding.cause_label = CAUSES.get(finding.cause, finding.cause)
        finding.queued = queued_by_queue(finding)
    resolved = list(Finding.objects.filter(status=Finding.Status.RESOLVED, kind__in=ORPHAN_KINDS).order_by("-resolved_at")[:RESOLVED_SHOWN])
    context = {"orphans": [f for f in open_findings if f.kind == "orphaned_jobs"],
               "risky": [f for f in open_findings if f.kind == "enqueue_in_transaction"], "resolved": resolved}
    return respond(request, "jobwatch/orphans.html", context, fragments=["orphan-list"], api=["orphans", "risky", "resolved"])


def queued_by_queue(finding):
    """{queue: [task ids]} of the finding's jobs still waiting in a queue (what purge can take)."""
    ids = finding.task_ids()
    queued = defaultdict(list)
    if ids:
        for queue, task_id in JobExecution.objects.filter(task_id__in=ids, state="enqueued").values_list("queue", "task_id"):
            queued[queue].append(task_id)
    return dict(queued)
