"""Count the Fan-out page's jobs by origin from the recorded jobs (after an upgrade)."""

from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.db import connections, router, transaction
from django.utils import timezone

from monitors.models import JobExecution, OriginTally
from monitors.recording.origin_tally import count_history


class Command(BaseCommand):
    help = ("Count the jobs that saves, deletes and signals enqueued, per minute and hour, from the recorded jobs "
            "of the last --days days, up to the first minute already counted: what the Fan-out page reads. "
            "Migration 0023 does it for the last week unless that week holds too many jobs; then run this.")

    def add_arguments(self, parser):
        parser.add_argument("--days", type=float, default=7.0, help="how far back to count (default 7, the page's longest window)")

    def handle(self, days, **options):
        if not 0 < days <= 366:
            raise CommandError("--days must be more than 0 and at most 366")
        since = (timezone.now() - timedelta(days=days)).replace(minute=0, second=0, microsecond=0)
        alias = router.db_for_write(OriginTally)
        with transaction.atomic(using=alias):
            jobs, rows = count_history(JobExecution, OriginTally, connections[alias], since)
        self.stdout.write(f"Counted {jobs:,} jobs enqueued since {since:%Y-%m-%d %H:%M} UTC into {rows:,} rows.")
