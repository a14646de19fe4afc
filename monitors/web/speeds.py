"""Reading tasks' speeds back from JobHistogram: bucket counts over a window, per task or for
one, and percentiles over time.

A window reads hourly rows for the whole hours it covers and per-minute rows for the minutes at
its two ends, so a week costs 168 rows per task and bucket, not 10,080; per-minute rows are kept
three days (monitors/retention.py), so a window reaching further back starts at the whole hour
it starts in (up to 59 minutes more: 1 % of a week).
"""

from collections import defaultdict
from dataclasses import replace
from datetime import timedelta

from django.db.models import Q, Sum
from django.utils import timezone

from monitors import timing
from monitors.models import JobHistogram
from monitors.retention import MINUTE_HISTOGRAM_DAYS
from monitors.timing import Speed
from monitors.web.windows import Bucket, bucket_of, bucket_times

RUNTIME, WAIT = JobHistogram.Measure.RUNTIME.value, JobHistogram.Measure.WAIT.value


def floor_hour(moment):
    return moment.replace(minute=0, second=0, microsecond=0)


def window_rows(since, until):
    """The Q that picks a window's rows: hourly for whole hours, per-minute at the ends."""
    first_hour = floor_hour(since)
    if first_hour < since:
        first_hour += timedelta(hours=1)
    last_hour = floor_hour(until)
    if since < timezone.now() - timedelta(days=MINUTE_HISTOGRAM_DAYS) + timedelta(minutes=5):
        first_hour = floor_hour(since)  # its minutes are gone: take the whole first hour
    if first_hour >= last_hour:
        return Q(resolution=timing.MINUTE, start__gte=since.replace(second=0, microsecond=0), start__lte=until)
    return (Q(resolution=timing.HOUR, start__gte=first_hour, start__lt=last_hour)
            | Q(resolution=timing.MINUTE, start__gte=since.replace(second=0, microsecond=0), start__lt=first_hour)
            | Q(resolution=timing.MINUTE, start__gte=last_hour, start__lte=until))


def counts_by_task(window, measure, task=None):
    """{task: ({upper_ms: count}, seconds in all)} over the window."""
    rows = JobHistogram.objects.filter(window_rows(window.since, window.until), measure=measure)
    if task is not None:
        rows = rows.filter(task_name=task)
    found = defaultdict(lambda: ({}, 0.0))
    for task_name, upper, count, total in (rows.values_list("task_name", "upper_ms")
                                           .annotate(n=Sum("count"), seconds=Sum("total")).order_by()):
        counts, seconds = found[task_name]
        counts[upper] = counts.get(upper, 0) + count
        found[task_name] = (counts, seconds + (total or 0.0))
    return dict(found)


def speeds_by_task(window, measure):
    """{task: Speed} over the window, for every task with a time counted in it."""
    return {task: Speed.of(counts, seconds) for task, (counts, seconds) in counts_by_task(window, measure).items()}


def task_speed(window, task, measure):
    """(Speed, {upper_ms: count}) of one task over the window."""
    counts, seconds = counts_by_task(window, measure, task).get(task, ({}, 0.0))
    return Speed.of(counts, seconds), counts


def earlier(window):
    """The window to compare with: the same hours a day before, or for a week the week before."""
    shift = max(window.span, timedelta(days=1))
    return replace(window, end=window.until - shift), shift


def percentile_series(window, task, measure, fractions):
    """The bucket times of the window and {fraction: [seconds or None per bucket]} of one task."""
    times = bucket_times(window)
    position_of = bucket_of(times, window)
    # A chart's point spans window.bucket seconds: hourly rows where that is whole hours.
    resolution = timing.HOUR if window.bucket % timing.HOUR == 0 else timing.MINUTE
    rows = (JobHistogram.objects.filter(task_name=task, resolution=resolution, measure=measure, start__gte=times[0])
            .annotate(bucket=Bucket("start", window.bucket))
            .values_list("bucket", "upper_ms").annotate(n=Sum("count")).order_by())
    per_point = [dict() for _ in times]
    for point, upper, count in rows:
        position = position_of(point)
        if position is not None:
            per_point[position][upper] = per_point[position].get(upper, 0) + count
    return times, {fraction: [timing.percentile(counts, fraction) for counts in per_point] for fraction in fractions}
