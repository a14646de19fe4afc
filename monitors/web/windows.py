"""The time window a page shows (?window=1h) and the series drawn over it. Every chart reads
pre-aggregated rows — JobTally (jobs per minute) and QueueSample — so its cost follows the
window, never the size of the execution table."""

from collections import defaultdict
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from django.db.models import BigIntegerField, Func, Max, Sum
from django.utils import timezone

from monitors.models import JobTally, QueueSample
from monitors.web.params import Choice


@dataclass(frozen=True)
class Window:
    key: str
    span: timedelta
    bucket: int  # seconds per point on a chart
    # Fixed when a request reads its window, so that every chart and count of one page ends at
    # the same moment; unset in the WINDOWS table (then: now).
    end: datetime | None = None

    @property
    def until(self):
        return self.end or timezone.now()

    @property
    def since(self):
        return self.until - self.span

    @property
    def label(self):
        return LABELS[self.key]


WINDOWS = {
    "15m": Window("15m", timedelta(minutes=15), 60),
    "1h": Window("1h", timedelta(hours=1), 60),
    "6h": Window("6h", timedelta(hours=6), 300),
    "24h": Window("24h", timedelta(hours=24), 900),
    "7d": Window("7d", timedelta(days=7), 7200),
}
LABELS = {"15m": "15 minutes", "1h": "hour", "6h": "6 hours", "24h": "24 hours", "7d": "7 days"}


def window_param(default="1h"):
    """The ?window= a page declares with @query (monitors/web/params.py)."""
    return Choice(WINDOWS, default=default)


def window_from(request):
    """The window a page's @query(window=window_param(…)) parsed, ending now."""
    return replace(WINDOWS[request.query["window"]], end=timezone.now())


def bucket_times(window, now=None):
    """The start of every bucket in the window, oldest first (empty buckets show as zero)."""
    now = now or window.until
    step = window.bucket
    end = now.timestamp() // step * step
    start = (now - window.span).timestamp() // step * step
    count = int((end - start) // step) + 1
    return [datetime.fromtimestamp(start + index * step, tz=UTC) for index in range(count)]


class Bucket(Func):
    """The start, in epoch seconds, of the `seconds`-wide bucket a time falls in — computed by the
    database, so a day of per-minute tallies comes back as 96 rows per series, not 1,440."""

    output_field = BigIntegerField()

    def __init__(self, expression, seconds):
        self.seconds = int(seconds)
        super().__init__(expression)

    def as_postgresql(self, compiler, connection, **extra):
        template = f"(FLOOR(EXTRACT(EPOCH FROM %(expressions)s) / {self.seconds}) * {self.seconds})::bigint"
        return self.as_sql(compiler, connection, template=template, **extra)

    def as_sqlite(self, compiler, connection, **extra):
        # Epoch seconds from the Julian day, floored (CAST truncates), plus a millisecond for the
        # float's error on whole seconds (no strftime('%s'): a literal % breaks the SQL Django
        # logs with DEBUG on).
        epoch = "CAST((julianday(%(expressions)s) - 2440587.5) * 86400 + 0.001 AS INTEGER)"
        template = f"({epoch} / {self.seconds} * {self.seconds})"
        return self.as_sql(compiler, connection, template=template, **extra)


def bucket_of(times, window):
    """A function from a bucket's start (epoch seconds, as Bucket gives it) to its position in
    `times` (None outside the window)."""
    start, step, count = int(times[0].timestamp()), window.bucket, len(times)

    def position(epoch):
        index = (int(epoch) - start) // step
        return index if 0 <= index < count else None

    return position


def tally_series(window, metrics, by=None, using="default", **filters):
    """{(metric, by-value): [count per bucket]} and the bucket times, from JobTally."""
    times = bucket_times(window)
    position_of = bucket_of(times, window)
    fields = ["bucket", "metric"] + ([by] if by else [])
    # From the first bucket's start, so that the first point counts a whole bucket like the others.
    rows = (JobTally.objects.using(using).filter(minute__gte=times[0], metric__in=metrics, **filters)
            .annotate(bucket=Bucket("minute", window.bucket))
            .values_list(*fields).annotate(total=Sum("count")).order_by())
    series = defaultdict(lambda: [0] * len(times))
    for bucket, metric, *rest in rows:
        position = position_of(bucket)
        if position is not None:
            series[(metric, rest[0] if by else "")][position] += rest[-1]
    return times, series


def per_minute(counts, window):
    return [round(count * 60 / window.bucket, 2) for count in counts]


def failure_rates(failed, succeeded):
    """% of finished jobs that failed, per bucket (None where nothing finished)."""
    return [round(100 * bad / (bad + good), 1) if bad + good else None for bad, good in zip(failed, succeeded, strict=True)]


def queue_peaks(window, field, using="default"):
    """{queue: ([times], [values])}: the highest value of one QueueSample field in each of the
    window's chart buckets, raw samples and roll-ups alike. A chart draws a bucket in a few
    pixels, and a queue's worst moment in it is what an operator looks for: one row per queue and
    bucket comes back (60 an hour) rather than every sample (240 an hour at the sampler's pace)."""
    times = bucket_times(window)
    rows = (QueueSample.objects.using(using).filter(sampled_at__gte=times[0]).annotate(bucket=Bucket("sampled_at", window.bucket))
            .values_list("queue", "bucket").annotate(peak=Max(field)).order_by("queue", "bucket"))
    series = defaultdict(lambda: ([], []))
    for queue, bucket, peak in rows:
        moments, values = series[queue]
        moments.append(datetime.fromtimestamp(bucket, tz=UTC))
        values.append(peak)
    return dict(series)


def queue_series(window, field, queues=None):
    """{queue: ([times], [values])} of one QueueSample field over the window: raw samples, or the
    10-minute roll-ups where the raw ones were folded."""
    samples = QueueSample.objects.filter(sampled_at__gte=window.since).order_by("sampled_at")
    if queues is not None:
        samples = samples.filter(queue__in=list(queues))
    series = defaultdict(lambda: ([], []))
    for queue, moment, value in samples.values_list("queue", "sampled_at", field):
        times, values = series[queue]
        times.append(moment)
        values.append(value)
    return dict(series)
