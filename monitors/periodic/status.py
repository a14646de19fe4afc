"""Each entry as the operator reads it: its schedule in words, its last run, the next run its
schedule expects (and whether that is overdue), its recent runs and success rate — for the
Periodic tasks page, its JSON and `manage.py jobwatch_periodic`."""

from django.utils import timezone

from monitors.heartbeats import BEAT
from monitors.models import MonitorHeartbeat
from monitors.periodic.runs import next_expected, recent_runs, reckoned_from, summary
from monitors.periodic.schedule import entries

RECENT = 30  # runs read per entry


def all_statuses(now=None, count=RECENT, known=None):
    """[status of each entry of `known` ({name: Entry}, in its order; default every entry, by name)]."""
    now = now or timezone.now()
    known = entries() if known is None else known
    runs = recent_runs(known, count)
    beat = MonitorHeartbeat.objects.filter(task=BEAT).first()
    return [entry_status(entry, runs[name], beat, now) for name, entry in known.items()]


def entry_status(entry, runs, beat, now):
    seen = summary(runs)
    last = seen["last"]
    # Counted from the last run Jobwatch saw, else the scheduler's own record, else beat's start.
    reference = reckoned_from(entry, last["enqueued_at"] if last else None, beat.last_run_at if beat else None)
    expected = next_expected(entry, reference) if entry.enabled and entry.runs_in_beat else None
    return {
        "name": entry.name, "task": entry.task, "schedule": entry.words, "source": entry.source, "queue": entry.queue,
        "enabled": entry.enabled, "one_off": entry.one_off, "runs_in_beat": entry.runs_in_beat,
        "args": entry.args, "kwargs": entry.kwargs, "total_run_count": entry.total_run_count,
        "last_run": last, "next_expected": expected, "overdue": expected is not None and expected < now,
        "success_rate": seen["success_rate"], "states": seen["states"], "durations": seen["durations"],
    }
