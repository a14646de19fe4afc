"""Failures grouped by task and exception over a window, with how they went over time, the
latest example of each, and replay or discard of a whole group (both previewed first).

Counts come from the per-minute tallies (JobTally) in one grouped query, so a day of failures
costs the same to show at any history size; each group's example is found through the
failed-jobs index."""

from collections import defaultdict

from django.db.models import Sum

from monitors.models import JobExecution, JobTally
from monitors.web import charts
from monitors.web.access import staff_only
from monitors.web.respond import respond
from monitors.web.windows import WINDOWS, bucket_times, floor_to, window_from

GROUPS_SHOWN = 50
CHART_TASKS = 6
EXAMPLE_COLUMNS = ["task_id", "task_name", "exception_type", "exception_message", "finished_at", "queue", "args"]


@staff_only
def failure_list(request):
    window = window_from(request, default="24h")
    task = request.GET.get("task", "").strip()
    times, by_group = failures_by_group(window, {"task_name": task} if task else {})
    ranked = sorted(by_group.items(), key=lambda item: -sum(item[1]))
    groups = []
    for (task_name, exception), trend in ranked[:GROUPS_SHOWN]:
        groups.append({
            "task_name": task_name, "exception": exception, "failures": sum(trend), "trend": trend,
            "example": latest_failure(task_name, exception),
            "filter": {"task": task_name, "state": "failed", "since": window.key, **({"exception": exception} if exception else {})},
        })
    by_task = defaultdict(lambda: [0] * len(times))
    for (task_name, _), trend in by_group.items():
        by_task[task_name] = [a + b for a, b in zip(by_task[task_name], trend, strict=True)]
    top_tasks = sorted(by_task.items(), key=lambda item: -sum(item[1]))[:CHART_TASKS]
    context = {
        "window": window, "windows": WINDOWS, "task": task, "groups": groups,
        "total": sum(sum(trend) for trend in by_group.values()),
        "chart": charts.line_chart([(name, times, counts) for name, counts in top_tasks],
                                   title=f"Failures per {window.bucket // 60} min, by task", stacked=True),
    }
    return respond(request, "jobwatch/failures.html", context, fragments=["failure-groups"],
                   api=["window", "task", "groups", "total"])


def failures_by_group(window, filters):
    """The bucket times, and {(task, exception): [failures per bucket]}."""
    times = bucket_times(window)
    index = {moment: position for position, moment in enumerate(times)}
    series = {}
    rows = (JobTally.objects.filter(metric="failed", minute__gte=window.since, **filters)
            .values("minute", "task_name", "exception").annotate(total=Sum("count")).order_by())
    for row in rows:
        position = index.get(floor_to(row["minute"], window.bucket))
        if position is not None:
            series.setdefault((row["task_name"], row["exception"]), [0] * len(times))[position] += row["total"]
    return times, series


def latest_failure(task, exception):
    """The newest failed job of a group (the tallies name exceptions by class name; the execution
    table may hold the dotted path)."""
    failed = JobExecution.objects.filter(state="failed", task_name=task, discarded_at__isnull=True)
    if exception:
        failed = failed.filter(exception_type__in=[exception]) | failed.filter(exception_type__endswith=f".{exception}")
    return failed.only(*EXAMPLE_COLUMNS).order_by("-id").first()
