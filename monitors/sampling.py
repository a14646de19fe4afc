"""Queue history: the periodic sample of every queue, the latest samples for pages, and the
roll-up that keeps a year of history small."""

from datetime import timedelta

from celery import current_app
from django.utils import timezone

from monitors.brokers import broker_kind
from monitors.conf import setting
from monitors.models import QueueSample
from monitors.queues import QueueRow, snapshot

ROLLUP_RESOLUTION = 600  # seconds in one rolled-up sample


def bucket(moment, seconds):
    """`moment` rounded down to a multiple of `seconds`: samplers on several workers that run
    within the same interval write the same (queue, sampled_at) and the second one is ignored."""
    epoch = int(moment.timestamp())
    return moment.replace(microsecond=0) - timedelta(seconds=epoch % seconds)


def sample_queues(app=None):
    """Read every queue once and store one sample each. Returns the rows written."""
    app = app or current_app
    kind = broker_kind(app)
    rows = snapshot(app)
    sampled_at = bucket(timezone.now(), max(int(setting("SAMPLE_INTERVAL")), 1))
    QueueSample.objects.bulk_create(
        [
            QueueSample(
                queue=row.name,
                sampled_at=sampled_at,
                broker=kind,
                depth=row.depth,
                depth_by_priority={str(level): count for level, count in row.depth_by_priority.items()} or None,
                in_flight=row.in_flight,
                scheduled=row.scheduled,
                consumers=row.consumers,
                workers=row.workers,
                oldest_age=row.oldest_age,
                arrivals_per_minute=row.arrivals_per_minute,
                drains_per_minute=row.drains_per_minute,
                exists_on_broker=row.exists_on_broker,
                error=row.error,
            )
            for row in rows
        ],
        ignore_conflicts=True,
    )
    return rows


def latest_queue_rows(within=timedelta(minutes=10)):
    """The queue table from the newest sample of each queue, for pages (no broker call)."""
    since = timezone.now() - within
    samples = QueueSample.objects.filter(sampled_at__gte=since, resolution=0).order_by("queue", "-sampled_at")
    newest = {}
    for sample in samples:
        newest.setdefault(sample.queue, sample)
    return [row_from_sample(sample) for sample in newest.values()]


def row_from_sample(sample):
    return QueueRow(
        name=sample.queue,
        depth=sample.depth,
        depth_by_priority={int(level): count for level, count in (sample.depth_by_priority or {}).items()},
        in_flight=sample.in_flight,
        scheduled=sample.scheduled,
        consumers=sample.consumers,
        workers=sample.workers,
        oldest_age=sample.oldest_age,
        arrivals_per_minute=sample.arrivals_per_minute,
        drains_per_minute=sample.drains_per_minute,
        exists_on_broker=sample.exists_on_broker,
        error=sample.error,
        sampled_at=sample.sampled_at,
    )


def queue_history(queue, since):
    """Samples of one queue since `since`, oldest first (raw and rolled-up alike)."""
    return list(QueueSample.objects.filter(queue=queue, sampled_at__gte=since).order_by("sampled_at"))


def roll_up_samples(now=None, keep_raw=None, chunk=timedelta(hours=6)):
    """Fold raw samples older than `keep_raw` into 10-minute ones (the worst depth and age of
    each bucket, the mean rates), then delete rolled-up samples past the retention. Works through
    at most `chunk` of history per call, oldest first, so each run is short. Returns
    (raw samples folded, rolled-up samples written, old samples deleted)."""
    now = now or timezone.now()
    keep_raw = keep_raw or timedelta(days=setting("SAMPLE_RAW_DAYS"))
    cutoff = now - keep_raw
    first = QueueSample.objects.filter(resolution=0, sampled_at__lt=cutoff).order_by("sampled_at").first()
    folded = written = 0
    if first is not None:
        end = min(cutoff, first.sampled_at + chunk)
        raw = QueueSample.objects.filter(resolution=0, sampled_at__gte=first.sampled_at, sampled_at__lt=end)
        groups = {}
        for sample in raw.order_by("sampled_at").iterator(chunk_size=2000):
            groups.setdefault((sample.queue, bucket(sample.sampled_at, ROLLUP_RESOLUTION)), []).append(sample)
        QueueSample.objects.bulk_create(
            [rolled_up(queue, at, samples) for (queue, at), samples in groups.items()], ignore_conflicts=True
        )
        written = len(groups)
        folded, _ = raw.delete()
    retention = now - timedelta(days=setting("SAMPLE_RETENTION_DAYS"))
    deleted, _ = QueueSample.objects.filter(sampled_at__lt=retention).delete()
    return folded, written, deleted


def rolled_up(queue, sampled_at, samples):
    def worst(name):
        values = [getattr(sample, name) for sample in samples if getattr(sample, name) is not None]
        return max(values) if values else None

    def mean(name):
        values = [getattr(sample, name) for sample in samples if getattr(sample, name) is not None]
        return sum(values) / len(values) if values else None

    last = samples[-1]
    return QueueSample(
        queue=queue,
        sampled_at=sampled_at,
        resolution=ROLLUP_RESOLUTION,
        broker=last.broker,
        depth=worst("depth"),
        in_flight=worst("in_flight"),
        scheduled=worst("scheduled"),
        consumers=last.consumers,
        workers=last.workers,
        oldest_age=worst("oldest_age"),
        arrivals_per_minute=mean("arrivals_per_minute"),
        drains_per_minute=mean("drains_per_minute"),
        exists_on_broker=last.exists_on_broker,
    )
