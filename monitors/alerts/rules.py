"""The alert rules that are not a detector's: the monitor itself stale. (Queue length and age,
failure rate, no consumer: the backlog detector; storms, orphans, circuits: theirs. Every open
finding is an alert.)"""

from monitors.heartbeats import stale_tasks
from monitors.detectors.base import Problem

NAME = "monitor"


def monitor_problems(now, in_place_of_beat=""):
    """Jobwatch's own periodic tasks that stopped. Run by jobwatch.send_alerts (which is running,
    then), or by a worker's watch when beat is not (`in_place_of_beat`: the worker)."""
    problems = []
    running = None if in_place_of_beat else "jobwatch.send_alerts"
    for task, last_run, interval in stale_tasks(now, running=running):
        if task == running:
            continue  # this very task is running now; /healthz watches it
        since = f"since {last_run:%Y-%m-%d %H:%M:%S} UTC" if last_run else "ever"
        noticed = (f" Noticed by {in_place_of_beat}'s watch: beat itself is not sending Jobwatch's tasks."
                   if in_place_of_beat else "")
        problems.append(Problem(
            kind="monitor_stale", subject=task, severity="critical", keys=["monitor:jobwatch"],
            fix="Start celery beat (or a worker with -B) and a worker for the queue Jobwatch's tasks go to.",
            title=f"Jobwatch's {task} has not run {since}",
            explanation=(
                f"{task} should run every {interval:g} s. Without it Jobwatch's pages, findings and alerts are "
                "out of date: silence here does not mean all is well. Check that celery beat runs (or a worker "
                "with -B), and that a worker consumes the queue Jobwatch's tasks are routed to." + noticed
            ),
            evidence={"task": task, "last_run": last_run.isoformat() if last_run else None, "interval_seconds": interval},
        ))
    return problems
