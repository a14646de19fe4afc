"""The time window a page shows (?window=1h) and the series drawn over it. Every chart reads
pre-aggregated rows — JobTally (jobs per minute) and QueueSample — so its cost follows the
window, never the size of the execution table."""

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.db.models import Sum
from django.utils import timezone

from monitors.models import JobTally, QueueSample


@dataclass(frozen=True)
class Window:
    key: str
    span: timedelta
    bucket: int  # seconds per point on a chart

    @property
    def since(self):
        return timezone.now() - self.span

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


def window_from(request, default="1h"):
    return WINDOWS.get(request.GET.get("window", ""), WINDOWS[default])


def bucket_times(window, now=None):
    """The start of every bucket in the window, oldest first (empty buckets show as zero)."""
    now = now or timezone.now()
    step = window.bucket
    end = now.timestamp() // step * step
    start = (now - window.span).timestamp() // step * step
    count = int((end - start) // step) + 1
    return [datetime.fromtimestamp(start + index * step, tz=UTC) for index in range(count)]


def floor_to(moment, seconds):
    return datetime.fromtimestamp(moment.timestamp() // seconds * seconds, tz=UTC)


def tally_series(window, metrics, by=None, **filters):
    """{(metric, by-value): [count per bucket]} and the bucket times, from JobTally."""
    times = bucket_times(window)
    index = {moment: position for position, moment in enumerate(times)}
    fields = ["minute", "metric"] + ([by] if by else [])
    rows = (JobTally.objects.filter(minute__gte=window.since, metric__in=metrics, **filters)
            .values(*fields).annotate(total=Sum("count")).order_by())
    series = defaultdict(lambda: [0] * len(times))
    for row in rows:
        position = index.get(floor_to(row["minute"], window.bucket))
        if position is not None:
            series[(row["metric"], row[by] if by else "")][position] += row["total"]
    return times, series


def per_minute(counts, window):
    return [round(count * 60 / window.bucket, 2) for count in counts]


def failure_rates(failed, succeeded):
    """% of finished jobs that failed, per bucket (None where nothing finished)."""
    return [round(100 * bad / (bad + good), 1) if bad + good else None for bad, good in zip(failed, succeeded, strict=True)]


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
