"""Reading tasks' speeds back from JobHistogram: bucket counts over a window, per task or for
one, and percentiles over time.

A window reads the coarsest rows that fit: daily ones for the whole (UTC) days it covers, hourly
ones for the whole hours around them, per-minute ones for the minutes at its two ends — a week
costs about 6 + 46 rows per task and bucket, not 10,080. Per-minute rows are kept three days
(monitors/retention.py), so a window reaching further back starts at the whole hour it starts in
(up to 59 minutes more: 1 % of a week).
"""

from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import timedelta

from django.db.models import Sum
from django.utils import timezone

from monitors import timing
from monitors.models import JobHistogram
from monitors.retention import MINUTE_HISTOGRAM_DAYS
from monitors.sampling import bucket as floor_to
from monitors.timing import Speed
from monitors.web.windows import Bucket, bucket_of, bucket_times

RUNTIME, WAIT = JobHistogram.Measure.RUNTIME.value, JobHistogram.Measure.WAIT.value
RESOLUTIONS = (timing.DAY, timing.HOUR, timing.MINUTE)  # coarsest first


def ceil_to(moment, seconds):
    floor = floor_to(moment, seconds)
    return floor if floor == moment else floor + timedelta(seconds=seconds)


def spans(since, until, resolutions=RESOLUTIONS, up_to_now=False):
    """[(resolution, start, end)]: which rows cover [since, until) — the coarsest for the middle,
    finer ones for the ends; the finest takes every row that starts in its span.

    `up_to_now`: nothing was counted after `until` yet, so the row of the day (or hour) that
    `until` falls in holds exactly its start to `until`, and stands for the finer rows after it:
    a 7-day window ending now reads today's day row, not up to 23 hours and 59 minutes of rows."""
    if since >= until:
        return []
    resolution, *finer = resolutions
    if not finer:
        return [(resolution, floor_to(since, resolution), until)]
    first = ceil_to(since, resolution)
    last = ceil_to(until, resolution) if up_to_now else floor_to(until, resolution)
    if first >= last:
        return spans(since, until, finer, up_to_now)
    return [*spans(since, first, finer), (resolution, first, last), *spans(last, until, finer, up_to_now)]


def window_spans(since, until):
    """spans() of the window [since, until], as far as the rows kept reach."""
    now = timezone.now()
    if since < now - timedelta(days=MINUTE_HISTOGRAM_DAYS) + timedelta(minutes=5):
        since = floor_to(since, timing.HOUR)  # its minutes are gone: take the whole first hour
    # Half-open spans; the row of the minute `until` is in starts before until + 1 µs. A window
    # that ends at the page's moment (not the day-before comparison) reads the current rows whole.
    return spans(since, until + timedelta(microseconds=1), up_to_now=until >= now - UP_TO_NOW)


UP_TO_NOW = timedelta(seconds=5)  # a window ending this close to now ends now (the page's own clock)


@dataclass
class TaskTimes:
    """One task's times of one measure over a window: {upper_ms: count}, the seconds they add up
    to, and (runtime) how many of the jobs failed."""

    counts: dict = field(default_factory=dict)
    seconds: float = 0.0
    failed: int = 0

    @property
    def speed(self):
        return Speed.of(self.counts, self.seconds)


def times_by_task(window, measure, task=None):
    """{task: TaskTimes} over the window, in one query (times_by_measure)."""
    return times_by_measure(window, (measure,), task)[measure]


def times_by_measure(window, measures, task=None):
    """{measure: {task: TaskTimes}} over the window, in one query: a grouped read per span of rows
    (UNION ALL), each a range of the window index read from the index alone (an OR of the spans
    would make the planner visit every row in the table), summed here."""
    branches = []
    for resolution, start, end in window_spans(window.since, window.until):
        rows = JobHistogram.objects.filter(resolution=resolution, measure__in=list(measures), start__gte=start, start__lt=end)
        if task is not None:
            rows = rows.filter(task_name=task)
        branches.append(rows.values_list("measure", "task_name", "outcome", "upper_ms")
                        .annotate(n=Sum("count"), seconds=Sum("total")).order_by())
    found = {measure: defaultdict(TaskTimes) for measure in measures}
    if branches:
        first, *rest = branches
        for measure, task_name, outcome, upper, count, total in (first.union(*rest, all=True) if rest else first):
            times = found[measure][task_name]
            times.counts[upper] = times.counts.get(upper, 0) + count
            times.seconds += total or 0.0
            if outcome == "failed":
                times.failed += count
    return {measure: dict(by_task) for measure, by_task in found.items()}


def speeds_by_task(window, measure):
    """{task: Speed} over the window, for every task with a time counted in it."""
    return {task: times.speed for task, times in times_by_task(window, measure).items()}


def task_times(window, task, measures):
    """{measure: TaskTimes} of one task over the window (empty where it has none), in one query."""
    found = times_by_measure(window, measures, task)
    return {measure: found[measure].get(task, TaskTimes()) for measure in measures}


def earlier(window):
    """The window to compare with: the same hours a day before, or for a week the week before."""
    shift = max(window.span, timedelta(days=1))
    return replace(window, end=window.until - shift), shift


def percentile_series(window, task, fractions_by_measure):
    """The bucket times of the window and {measure: {fraction: [seconds or None per bucket]}} of
    one task, every measure in one query. Over a day or more a point is an hour (or the window's
    own wider bucket), read from the hourly rows: percentiles of 15 minutes would read 24 times the
    rows for a line no one reads more closely."""
    if window.span >= timedelta(days=1) and window.bucket < timing.HOUR:
        window = replace(window, bucket=timing.HOUR)
    times = bucket_times(window)
    position_of = bucket_of(times, window)
    resolution = timing.HOUR if window.bucket % timing.HOUR == 0 else timing.MINUTE
    rows = (JobHistogram.objects.filter(task_name=task, resolution=resolution, measure__in=list(fractions_by_measure),
                                        start__gte=times[0])
            .annotate(bucket=Bucket("start", window.bucket))
            .values_list("measure", "bucket", "upper_ms").annotate(n=Sum("count")).order_by())
    per_point = {measure: [dict() for _ in times] for measure in fractions_by_measure}
    for measure, point, upper, count in rows:
        position = position_of(point)
        if position is not None:
            counts = per_point[measure][position]
            counts[upper] = counts.get(upper, 0) + count
    lines = {}
    for measure, fractions in fractions_by_measure.items():
        lines[measure] = {fraction: [] for fraction in fractions}
        for counts in per_point[measure]:
            for fraction, seconds in zip(fractions, timing.percentiles(counts, fractions), strict=True):
                lines[measure][fraction].append(seconds)
    return times, lines
