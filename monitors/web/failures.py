"""Failures grouped by task and exception over a window (the last hour unless asked), with how they went over time, the
latest example of each, and replay or discard of a whole group (both previewed first).

Counts come from the per-minute tallies (JobTally) in one grouped query, so a day of failures
costs the same to show at any history size; each group's example is found through the
failed-jobs index."""

from collections import defaultdict
from datetime import timedelta

from django.db.models import Sum
from django.utils import timezone

from monitors.models import JobExecution, JobTally
from monitors.web import charts
from monitors.web.access import staff_only
from monitors.web.respond import respond
from monitors.web.params import Text, query
from monitors.web.windows import WINDOWS, Bucket, bucket_of, bucket_times, window_from, window_param

GROUPS_SHOWN = 30
CHART_TASKS = 6
EXAMPLES_READ = 1000  # newest failures read to find each group's latest example
EXAMPLE_COLUMNS = ["task_id", "task_name", "exception_type", "exception_message", "finished_at", "queue", "args"]


@staff_only
@query(window=window_param("1h"), task=Text())
def failure_list(request):
    window = window_from(request)
    task = request.query["task"]
    times, by_group = failures_by_group(window, {"task_name": task} if task else {})
    ranked = sorted(by_group.items(), key=lambda item: -sum(item[1]))
    shown = ranked[:GROUPS_SHOWN]
    examples = latest_failures([key for key, _ in shown])
    groups = []
    for (task_name, exception), trend in shown:
        groups.append({
            "task_name": task_name, "exception": exception, "failures": sum(trend), "trend": trend,
            "example": examples.get((task_name, exception)),
            # Replay and discard by this filter; a blank part would be dropped and widen the group to
            # every failure of the task, so a group without an exception or task has no bulk action.
            "filter": {"task": task_name, "state": "failed", "since": window.key, "exception": exception}
                      if task_name and exception else None,
        })
    by_task = defaultdict(lambda: [0] * len(times))
    for (task_name, _), trend in by_group.items():
        by_task[task_name] = [a + b for a, b in zip(by_task[task_name], trend, strict=True)]
    top_tasks = sorted(by_task.items(), key=lambda item: -sum(item[1]))[:CHART_TASKS]
    total = sum(sum(trend) for trend in by_group.values())
    context = {
        "window": window, "windows": WINDOWS, "task": task, "groups": groups, "total": total,
        # The page opens on the last hour, where a spike stands out; a quiet hour says what the
        # day held, so that "no failures" is never read as "nothing failed today".
        "day": failures_in(WINDOWS["24h"], task) if not total and window.span < WINDOWS["24h"].span else None,
        "chart": charts.line_chart([(name, times, counts) for name, counts in top_tasks],
                                   title=f"Failures per {window.bucket // 60} min, by task", stacked=True, window=window),
    }
    return respond(request, "jobwatch/failures.html", context, fragments=["failure-groups"],
                   api=["window", "task", "groups", "total"])


def failures_in(window, task=""):
    tallies = JobTally.objects.filter(metric="failed", minute__gte=window.since)
    if task:
        tallies = tallies.filter(task_name=task)
    return tallies.aggregate(total=Sum("count"))["total"] or 0


def failures_by_group(window, filters):
    """The bucket times, and {(task, exception): [failures per bucket]}."""
    times = bucket_times(window)
    position_of = bucket_of(times, window)
    series = {}
    rows = (JobTally.objects.filter(metric="failed", minute__gte=times[0], **filters)
            .annotate(bucket=Bucket("minute", window.bucket))
            .values_list("bucket", "task_name", "exception").annotate(total=Sum("count")).order_by())
    for bucket, task_name, exception, total in rows:
        position = position_of(bucket)
        if position is not None:
            series.setdefault((task_name, exception), [0] * len(times))[position] += total
    return times, series


def latest_failures(groups, read=EXAMPLES_READ):
    """{(task, exception): the newest failed job of that group}. One read of the newest failures
    through the failed-jobs index, matched to the groups here (the tallies name an exception by
    its class, the execution table may hold the dotted path); a group none of them belongs to gets
    one query of its own."""
    wanted = set(groups)
    picked, times = {}, {}
    newest = JobExecution.objects.filter(state="failed", discarded_at__isnull=True).order_by("-id")
    # The last day first: over a day-partitioned history that read is planned over a partition or
    # two rather than all of them; all of history only when the day does not hold every group.
    for reach in (timedelta(days=1), None):
        read_from = newest if reach is None else newest.filter(enqueued_at__gte=timezone.now() - reach)
        rows = read_from.values_list("id", "task_name", "exception_type", "enqueued_at")[:read]
        for pk, task, exception_type, enqueued_at in rows:
            for exception in (exception_type, exception_type.rsplit(".", 1)[-1]):
                if (task, exception) in wanted and (task, exception) not in picked:
                    picked[(task, exception)], times[pk] = pk, enqueued_at
        if len(rows) >= read or not wanted - set(picked):
            break
    for task, exception in wanted - set(picked):
        example = latest_failure(task, exception)
        if example is not None:
            picked[(task, exception)], times[example.pk] = example.pk, example.enqueued_at
    if not picked:
        return {}
    # Their times bound the look-up too, so that it reads only their days' partitions.
    jobs = (JobExecution.objects.only(*EXAMPLE_COLUMNS).filter(enqueued_at__range=(min(times.values()), max(times.values())))
            .in_bulk(list(picked.values())))
    return {group: jobs.get(pk) for group, pk in picked.items()}


def latest_failure(task, exception):
    failed = JobExecution.objects.filter(state="failed", task_name=task, discarded_at__isnull=True)
    if exception:
        failed = failed.filter(exception_type__in=[exception]) | failed.filter(exception_type__endswith=f".{exception}")
    return failed.only(*EXAMPLE_COLUMNS, "enqueued_at").order_by("-id").first()
