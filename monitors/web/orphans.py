"""Orphans: jobs whose database record is missing, by task and cause (rolled back, ran before
commit, deleted after enqueue), from the orphans detector's open findings, with replay (forced:
the record is gone, so the operator says it is wanted anyway) and purge of those still queued."""

from monitors.models import Finding
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
        # Straight from the finding's evidence, as the counts beside them: one set of numbers.
        finding.queued = (finding.evidence or {}).get("queued_job_ids") or {}
    resolved = list(Finding.objects.filter(status=Finding.Status.RESOLVED, kind__in=ORPHAN_KINDS).order_by("-resolved_at")[:RESOLVED_SHOWN])
    context = {"orphans": [f for f in open_findings if f.kind == "orphaned_jobs"],
               "risky": [f for f in open_findings if f.kind == "enqueue_in_transaction"], "resolved": resolved}
    return respond(request, "jobwatch/orphans.html", context, fragments=["orphan-list"], api=["orphans", "risky", "resolved"])
