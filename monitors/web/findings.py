"""Findings: what the detectors found, open first, with the evidence and the explanation of the
likely cause and the usual fix; a finding's page lists the jobs it names, its alert incidents,
and what can be done about it."""

import json

from django.shortcuts import get_object_or_404

from monitors.models import Finding, Incident, JobExecution, Severity
from monitors.selection import finding_task_ids
from monitors.web.access import staff_only
from monitors.web.respond import respond

PAGE = 100
JOBS_SHOWN = 50


@staff_only
def finding_list(request):
    status = request.GET.get("status", "open")
    findings = Finding.objects.order_by("-pk")  # newest first; the keyset pager pages by pk
    if status in Finding.Status.values:
        findings = findings.filter(status=status)
    for key in ("kind", "severity", "detector"):
        value = request.GET.get(key, "").strip()
        if value:
            findings = findings.filter(**{key: value})
    before = request.GET.get("before", "")
    if before.isdigit():
        findings = findings.filter(pk__lt=int(before))
    page = list(findings[: PAGE + 1])
    older = page[PAGE - 1].pk if len(page) > PAGE else None
    kinds = sorted(Finding.objects.filter(status=Finding.Status.OPEN).values_list("kind", flat=True).distinct())
    context = {"findings": page[:PAGE], "older": older, "status": status, "statuses": Finding.Status.choices,
               "severities": Severity.values, "kinds": kinds}
    return respond(request, "jobwatch/findings.html", context, fragments=["finding-rows"], api=["findings", "older", "status"])


@staff_only
def finding_detail(request, pk):
    finding = get_object_or_404(Finding, pk=pk)
    ids = finding_task_ids(finding)
    sample_ids = [str(item) for item in (finding.evidence or {}).get("sample_job_ids") or []]
    jobs = list(JobExecution.objects.filter(task_id__in=(ids or sample_ids)[:JOBS_SHOWN])
                .only("task_id", "task_name", "state", "queue", "enqueued_at", "exception_type", "origin_receiver").order_by("-id"))
    context = {
        "finding": finding, "jobs": jobs, "job_ids_total": len(ids), "selectable": bool(ids),
        "evidence_json": json.dumps(finding.evidence, indent=2, sort_keys=True, default=str),
        "incidents": list(Incident.objects.filter(fingerprint=finding.fingerprint).order_by("-opened_at")[:10]),
        "history": list(Finding.objects.filter(fingerprint=finding.fingerprint).exclude(pk=pk).order_by("-first_seen")[:10]),
    }
    return respond(request, "jobwatch/finding.html", context, fragments=["finding-state"],
                   api=["finding", "jobs", "job_ids_total", "incidents", "history"])
