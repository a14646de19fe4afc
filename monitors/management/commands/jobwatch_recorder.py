"""Print what the recorder wrote and what it lost, per recording process and in total."""

import json
from datetime import timedelta

from django.core.management.base import BaseCommand
from django.db.models import Sum
from django.utils import timezone

from monitors.models import RecorderProcess

COUNTERS = ["events_recorded", "events_dropped_overflow", "events_dropped_error", "write_errors", "capture_errors"]


class Command(BaseCommand):
    help = "Show the recorder's counters: events written, dropped (buffer full / write failed), errors."

    def add_arguments(self, parser):
        parser.add_argument("--hours", type=float, default=24.0, help="only processes that flushed within this many hours (default 24)")
        parser.add_argument("--json", action="store_true", help="print JSON instead of a table")

    def handle(self, hours, **options):
        json_output = options.get("json", False)
        since = timezone.now() - timedelta(hours=hours)
        processes = RecorderProcess.objects.filter(last_flush_at__gte=since).order_by("-last_flush_at")
        totals = processes.aggregate(**{name: Sum(name) for name in COUNTERS})
        totals = {name: totals[name] or 0 for name in COUNTERS}
        if json_output:
            rows = [
                {"hostname": p.hostname, "pid": p.pid, "program": p.program, "last_flush_at": p.last_flush_at.isoformat(),
                 "last_error": p.last_error, **{name: getattr(p, name) for name in COUNTERS}}
                for p in processes
            ]
            self.stdout.write(json.dumps({"totals": totals, "processes": rows}, indent=2))
            return
        self.stdout.write(f"Recorder, processes that flushed in the last {hours:g} h:")
        header = f"{'process':<28} {'recorded':>10} {'dropped(full)':>14} {'dropped(error)':>15} {'write errors':>13}  last flush"
        self.stdout.write(header)
        for p in processes:
            name = f"{p.hostname}:{p.pid}"[:28]
            self.stdout.write(
                f"{name:<28} {p.events_recorded:>10} {p.events_dropped_overflow:>14} {p.events_dropped_error:>15} "
                f"{p.write_errors:>13}  {p.last_flush_at:%Y-%m-%d %H:%M:%S}  {p.program}"
            )
            if p.last_error:
                self.stdout.write(f"{'':<28} last error: {p.last_error[:200]}")
        self.stdout.write(
            f"{'TOTAL':<28} {totals['events_recorded']:>10} {totals['events_dropped_overflow']:>14} "
            f"{totals['events_dropped_error']:>15} {totals['write_errors']:>13}"
        )
