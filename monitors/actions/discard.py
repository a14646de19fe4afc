"""Discarding failed jobs from the history: hidden from the lists and the detectors' windows, not
deleted (retention removes them in their time), and brought back with undo."""

from django.utils import timezone

from monitors.actions.gate import ActionResult, audited, check_size


def discard_jobs(user, selection, *, undo=False, dry_run=False, surface="dashboard", allow_large=False):
    """Hide failed jobs from the history (lists, detectors' windows keep them out), or bring them
    back with undo=True. Nothing is deleted: pruning by age removes them in its time."""
    parameters = {"selection": selection.describe(), "undo": undo}
    with audited(user, "discard_jobs", selection.target(), parameters, surface, dry_run) as log:
        jobs = selection.queryset(discarded=True) if undo else selection.queryset().filter(state="failed")
        log.matched = jobs.count()
        if dry_run:
            return ActionResult(log, log.matched, list(jobs.order_by("-id")[:20]))
        check_size(log.matched, allow_large, "jobs")
        log.succeeded = jobs.update(discarded_at=None if undo else timezone.now())
        return ActionResult(log, log.matched)
