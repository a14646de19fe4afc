"""Queue history: the periodic sample of every queue and the latest samples for pages (the roll-up
that keeps a year of it small is in retention.py)."""

from datetime import timedelta

from celery import current_app
from django.db import connections
from django.utils import timezone

from monitors.brokers import broker_kind
from monitors.conf import setting
from monitors.models import QueueSample
from monitors.queues import QueueRow, snapshot

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
    if connections[samples.db].vendor == "postgresql":
        # One row per queue from the database rather than ten minutes of every queue's samples
        # (40 a queue at the sampler's pace), on every page that shows the queues.
        samples = samples.distinct("queue")
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
