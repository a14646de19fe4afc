"""Keeping the history bounded. Every deletion by age is here, in batches (a big delete must not
hold locks for long or bloat one transaction), each kind with its own retention setting:

- jobs, their per-minute tallies (on PostgreSQL both by dropping whole day partitions), the
  Fan-out page's hourly counts by origin, the hourly and daily time histograms, circuit
  transitions, resolved findings (with their incidents and notifications) and recorder processes
  gone quiet: HISTORY_RETENTION_DAYS (30) — prune_history,
  daily;
- the audit log: AUDIT_RETENTION_DAYS (365) — prune_history;
- archived messages and the kept arguments of failed jobs: ARCHIVE_RETENTION_DAYS — prune_archive,
  hourly;
- per-minute time histograms: MINUTE_HISTOGRAM_DAYS (3; the speed pages read them for the ends
  of a window in the last 3 days, hourly rows for the rest) — prune_history;
- per-minute counts by origin: MINUTE_ORIGIN_DAYS (8: the Fan-out page's longest window and a
  day) — prune_history;
- queue samples: raw for SAMPLE_RAW_DAYS, then folded into 10-minute ones kept for
  SAMPLE_RETENTION_DAYS — roll_up_samples, hourly.

An operator's purge (actions/purge.py) is not retention: it takes messages off a live queue.
"""

from datetime import timedelta

from django.db import connections, router
from django.db.models import Q
from django.utils import timezone

from monitors.conf import setting
from monitors import partitions, timing
from monitors.recording import origin_tally
from monitors.models import (ActionLog, ArchivedMessage, CircuitEvent, Finding, JobExecution, JobHistogram, JobPayload,
                             JobTally, OriginTally, QueueSample, RecorderProcess)
from monitors.sampling import bucket

ROLLUP_RESOLUTION = 600  # seconds in one rolled-up sample
# Per-minute histograms give the exact ends of windows up to a day and of the same window a day
# before; kept 3 days so that, pruned once a day, the last 3 days are always there.
MINUTE_HISTOGRAM_DAYS = 3
# The Fan-out page reads minute counts by origin for the first, partial hour of its windows, the
# longest of which is 7 days.
MINUTE_ORIGIN_DAYS = 8

BATCH = 5000


def prune_history(now=None):
    now = now or timezone.now()
    history = now - timedelta(days=setting("HISTORY_RETENTION_DAYS"))
    audit = now - timedelta(days=setting("AUDIT_RETENTION_DAYS"))
    return {
        # Through the enqueued_at and finished_at indexes; jobs whose enqueue was never recorded
        # go by when they finished.
        "jobs": prune_by_day(partitions.JOBS, history, JobExecution.objects.filter(
            Q(enqueued_at__lt=history) | Q(enqueued_at__isnull=True, finished_at__lt=history))),
        "job_tallies": prune_by_day(partitions.TALLIES, history, JobTally.objects.filter(minute__lt=history)),
        "origin_tallies": delete_in_batches(OriginTally.objects.filter(
            Q(resolution=origin_tally.HOUR, start__lt=history)
            | Q(resolution=origin_tally.MINUTE, start__lt=now - timedelta(days=MINUTE_ORIGIN_DAYS)))),
        "job_histograms": delete_in_batches(JobHistogram.objects.filter(
            Q(resolution__in=[timing.HOUR, timing.DAY], start__lt=history)
            | Q(resolution=timing.MINUTE, start__lt=now - timedelta(days=MINUTE_HISTOGRAM_DAYS)))),
        "circuit_events": delete_in_batches(CircuitEvent.objects.filter(at__lt=history)),
        "findings": delete_in_batches(Finding.objects.filter(status=Finding.Status.RESOLVED, resolved_at__lt=history)),
        "recorder_processes": delete_in_batches(RecorderProcess.objects.filter(last_flush_at__lt=history)),
        "audit_log": delete_in_batches(ActionLog.objects.filter(at__lt=audit).exclude(outcome=ActionLog.Outcome.RUNNING)),
    }


def prune_by_day(history, cutoff, older):
    """A table partitioned by day (PostgreSQL, monitors/partitions.py) loses its days older than
    `cutoff` by dropping them, the day holding the cutoff kept whole; a plain one (SQLite) by
    deleting the `older` queryset in batches. Returns the rows gone (for dropped days, the
    planner's count of them)."""
    connection = connections[router.db_for_write(older.model)]
    if partitions.partition_key(connection, history.table) is None:
        return delete_in_batches(older)
    pruned = partitions.drop_before(connection, history, cutoff)
    return pruned.rows + pruned.deleted


def delete_in_batches(queryset):
    deleted = 0
    while True:
        ids = list(queryset.values_list("pk", flat=True)[:BATCH])
        if not ids:
            return deleted
        deleted += queryset.model.objects.filter(pk__in=ids).delete()[0]


def prune_archive(now=None):
    """Delete archived messages and kept arguments past ARCHIVE_RETENTION_DAYS. Returns how many went."""
    cutoff = (now or timezone.now()) - timedelta(days=setting("ARCHIVE_RETENTION_DAYS"))
    return (delete_in_batches(ArchivedMessage.objects.filter(archived_at__lt=cutoff))
            + delete_in_batches(JobPayload.objects.filter(recorded_at__lt=cutoff)))


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
    deleted = delete_in_batches(QueueSample.objects.filter(sampled_at__lt=retention))
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
