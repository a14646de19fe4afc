"""Findings: what the detectors found, open first in triage order (monitors/web/triage.py), with
the evidence and the explanation of the likely cause and the usual fix; a finding's page lists
the jobs it names, the incident it is evidence of, and what can be done about it."""

import json

from django.shortcuts import get_object_or_404

from monitors.models import Finding, Incident, JobExecution, Severity
from monitors.web.access import staff_only
from monitors.web.params import Choice, Id, Text, query
from monitors.web.respond import respond
from monitors.web.triage import after, in_triage_order

PAGE = 100
JOBS_SHOWN = 50


class UnrecordedJob:
    """A job a finding names that is not in the execution table (never recorded, or pruned)."""

    recorded = False
    task_name = queue = enqueued_at = exception_type = origin_receiver = ""

    def __init__(self, task_id):
        self.task_id = task_id

    def get_state_display(self):
        return "not recorded"

    def as_dict(self):
        return {"task_id": self.task_id, "recorded": False}


@staff_only
@query(status=Choice([*Finding.Status.values, "all"], default="open"), kind=Text(), severity=Choice(Severity.values),
       detector=Text(), incident=Id(), after=Id())
def finding_list(request):
    status = request.query["status"]
    findings = Finding.objects.all()
    if status != "all":
        findings = findings.filter(status=status)
    for key in ("kind", "severity", "detector"):
        if request.query[key]:
            findings = findings.filter(**{key: request.query[key]})
    if request.query["incident"]:
        findings = findings.filter(incident_id=request.query["incident"])
    findings = in_triage_order(findings)
    # Keyset pages in triage order: "after" is the last finding shown.
    shown = request.query["after"]
    last = findings.filter(pk=shown).first() if shown else None
    if last is not None:
        findings = after(findings, last)
    page = list(findings[: PAGE + 1])
    more = findings.count() - PAGE if len(page) > PAGE else 0
    kinds = sorted(Finding.objects.filter(status=Finding.Status.OPEN).values_list("kind", flat=True).distinct())
    context = {"findings": page[:PAGE], "more": more, "next_after": page[PAGE - 1].pk if more else None, "status": status,
               "statuses": Finding.Status.choices, "severities": Severity.values, "kinds": kinds}
    return respond(request, "jobwatch/findings.html", context, fragments=["finding-rows"],
                   api=["findings", "more", "next_after", "status"])


@staff_only
def finding_detail(request, pk):
    finding = get_object_or_404(Finding.objects.select_related("incident"), pk=pk)
    ids = finding.task_ids()
    sample_ids = [str(item) for item in (finding.evidence or {}).get("sample_job_ids") or []]
    shown = (ids or sample_ids)[:JOBS_SHOWN]
    recorded = {job.task_id: job for job in JobExecution.objects.filter(task_id__in=shown).only(
        "task_id", "task_name", "state", "queue", "enqueued_at", "exception_type", "origin_receiver")}
    # Every job the finding names has a line, recorded or not (a message seen only in a queue,
    # a job pruned since): the page counts what the finding counts.
    jobs = [recorded.get(task_id) or UnrecordedJob(task_id) for task_id in shown]
    context = {
        "finding": finding, "incident": finding.incident, "jobs": jobs, "job_ids_total": len(ids), "selectable": bool(ids),
        "evidence_json": json.dumps(finding.evidence, indent=2, sort_keys=True, default=str),
        "incidents": list(Incident.objects.filter(fingerprint=finding.fingerprint).order_by("-opened_at")[:10]),
        "history": list(Finding.objects.filter(fingerprint=finding.fingerprint).exclude(pk=pk).order_by("-first_seen")[:10]),
    }
    return respond(request, "jobwatch/finding.html", context, fragments=["finding-state"],
                   api=["finding", "jobs", "job_ids_total", "incident", "incidents", "history"])
