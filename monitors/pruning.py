"""Keeping the history bounded: the daily `jobwatch.prune_history` deletes what is older than its
retention, in batches (a big delete must not hold locks for long or bloat one transaction).

- jobs, their per-minute tallies, circuit transitions, resolved findings (with their incidents and notifications) and
  recorder processes gone quiet: HISTORY_RETENTION_DAYS (30);
- the audit log: AUDIT_RETENTION_DAYS (365);
- queue samples, archived messages and kept arguments have their own (sampling.py, purge.py).
"""

from datetime import timedelta

from django.db.models import Q
from django.utils import timezone

from monitors.conf import setting
from monitors.models import ActionLog, CircuitEvent, Finding, JobExecution, JobTally, RecorderProcess

BATCH = 5000


def prune_history(now=None):
    now = now or timezone.now()
    history = now - timedelta(days=setting("HISTORY_RETENTION_DAYS"))
    audit = now - timedelta(days=setting("AUDIT_RETENTION_DAYS"))
    return {
        # Through the enqueued_at and finished_at indexes; jobs whose enqueue was never recorded
        # go by when they finished.
        "jobs": delete_in_batches(JobExecution.objects.filter(
            Q(enqueued_at__lt=history) | Q(enqueued_at__isnull=True, finished_at__lt=history))),
        "job_tallies": delete_in_batches(JobTally.objects.filter(minute__lt=history)),
        "circuit_events": delete_in_batches(CircuitEvent.objects.filter(at__lt=history)),
        "findings": delete_in_batches(Finding.objects.filter(status=Finding.Status.RESOLVED, resolved_at__lt=history)),
        "recorder_processes": delete_in_batches(RecorderProcess.objects.filter(last_flush_at__lt=history)),
        "audit_log": delete_in_batches(ActionLog.objects.filter(at__lt=audit).exclude(outcome=ActionLog.Outcome.RUNNING)),
    }


def delete_in_batches(queryset):
    deleted = 0
    while True:
        ids = list(queryset.values_list("pk", flat=True)[:BATCH])
        if not ids:
            return deleted
        deleted += queryset.model.objects.filter(pk__in=ids).delete()[0]
