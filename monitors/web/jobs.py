"""The jobs list and a job's page: what ran, what it was called with, and what enqueued it."""

from django.shortcuts import get_object_or_404, render

from monitors.models import JobExecution, JobState, OriginKind
from monitors.web.access import staff_only

PAGE_SIZE = 50
FILTERS = {"task": "task_name", "queue": "queue", "state": "state", "origin": "origin_kind", "receiver": "origin_receiver"}


@staff_only
def job_list(request):
    jobs = JobExecution.objects.filter(discarded_at__isnull=True).order_by("-id")
    applied = {}
    for param, field in FILTERS.items():
        value = request.GET.get(param, "").strip()
        if value:
            jobs = jobs.filter(**{field: value})
            applied[param] = value
    before = request.GET.get("before", "")
    if before.isdigit():
        # Keyset pagination: "rows older than the last one shown" costs the same on page 1 and
        # page 10,000, where OFFSET would scan everything it skips.
        jobs = jobs.filter(id__lt=int(before))
    page = list(jobs[: PAGE_SIZE + 1])
    next_before = page[PAGE_SIZE - 1].id if len(page) > PAGE_SIZE else None
    context = {
        "jobs": page[:PAGE_SIZE],
        "applied": applied,
        "next_before": next_before,
        "states": JobState.choices,
        "origin_kinds": OriginKind.choices,
    }
    return render(request, "jobwatch/jobs.html", context)


@staff_only
def job_detail(request, task_id):
    job = get_object_or_404(JobExecution, task_id=task_id)
    children = JobExecution.objects.filter(parent_id=task_id).order_by("id")[:100]
    replays = JobExecution.objects.filter(replay_of=task_id).order_by("id")[:100]
    return render(request, "jobwatch/job.html", {"job": job, "children": children, "replays": replays})
