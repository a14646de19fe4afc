"""Periodic tasks: every beat entry beat runs, compared with what its schedule says and what its
runs did (monitors/periodic/). For each entry:

- *missed*: the run its schedule expected (counted from its last run, by the schedule's own
  reckoning: Celery's remaining_estimate) is overdue by PERIODIC_GRACE_SECONDS and nothing was
  sent — including when beat itself is not running (then linked to the stale monitor: one
  incident) or missed a crontab time while it was down;
- *sent twice*: two runs where one was due (two beats running);
- *not started*: its latest run sent PERIODIC_NOT_STARTED_SECONDS ago and still waiting in its
  queue;
- *failing*: its last PERIODIC_FAILING_RUNS finished runs failed;
- *overlapping*: a run that took (or is taking) longer than the time to the next one;
- *slow*: its latest run PERIODIC_SLOW_FACTOR times its usual duration (the median of its
  earlier runs), and at least PERIODIC_SLOW_MIN_SECONDS.

Thresholds per entry in PERIODIC_THRESHOLDS (by name), or per task in TASK_THRESHOLDS. Only
enabled entries of the scheduler beat uses are expected to run. Reads as of `now`: the entries,
their last 30 runs through the (origin_entry, enqueued_at) index, beat's heartbeat.
"""

import logging
from datetime import timedelta
from statistics import median

from django.db import DatabaseError

from monitors.heartbeats import BEAT, stale_tasks
from monitors.detectors.base import Problem, short, threshold
from monitors.models import JobExecution, MonitorHeartbeat
from monitors.periodic.runs import next_expected, recent_runs, reckoned_from
from monitors.periodic.schedule import entries
from monitors.periodic.tally import keep_tally

logger = logging.getLogger("monitors.detectors")

NAME = "periodic"
RUNS_READ = 30
SENT_TWICE_RUNS = 4
WALK_STEPS = 12  # due times of a crontab worked out per entry and pass, at most
FINISHED = ("succeeded", "failed")


def detect(now):
    expected = {name: entry for name, entry in entries().items() if entry.enabled and entry.runs_in_beat}
    runs = recent_runs(expected, RUNS_READ)
    beat = MonitorHeartbeat.objects.filter(task=BEAT).first()
    beat_down = bool(stale_tasks(now))
    problems, expect = [], Expectations()
    for name, entry in expected.items():
        # The schedule's runs: an operator's Run now is outside it (beat keeps its own cadence).
        entry_runs = [run for run in runs[name] if run["enqueued_at"] <= now and run["origin_kind"] != "manual"]
        for rule in (missed, sent_twice, not_started, failing, overlapping, slow):
            problem = rule(entry, entry_runs, now, beat=beat, beat_down=beat_down, expect=expect)
            if problem is not None:
                problems.append(problem)
    try:
        keep_tally(expected, runs, problems, now, expect, steps=WALK_STEPS)
    except DatabaseError:
        # The findings matter more than the metrics' tally: recorded all the same.
        logger.exception("Jobwatch could not keep the periodic tasks' tally for /metrics")
    return problems


class Expectations:
    """next_expected, worked out once per entry and moment in a pass: the rules ask about the same
    runs, and a crontab's reckoning (Celery's, with its timezone work) is the pass's main cost."""

    def __init__(self):
        self.known = {}

    def __call__(self, entry, moment):
        key = (entry.name, moment)
        if key not in self.known:
            self.known[key] = next_expected(entry, moment)
        return self.known[key]


def about(entry):
    return [f"periodic:{entry.name}"], [f"task:{entry.task}"] + ([f"queue:{entry.queue}"] if entry.queue else [])


def missed(entry, runs, now, beat=None, beat_down=False, expect=next_expected, **_):
    last = runs[0]["enqueued_at"] if runs else None
    reference = reckoned_from(entry, last, beat.last_run_at if beat else None)
    due = expect(entry, reference)
    grace = timedelta(seconds=threshold("PERIODIC_GRACE_SECONDS", task=entry.task, entry=entry.name))
    if due is None or now - due <= grace:
        return None
    count, complete = missed_count(entry, due, now - grace, expect=expect)
    keys, links = about(entry)
    cause = ("Beat is not running (Jobwatch's own periodic tasks stopped too): nothing is sending scheduled jobs."
             if beat_down else
             "Beat runs (Jobwatch's own periodic tasks do) but did not send this entry: it may have been left out of "
             "the schedule beat loaded, or beat was down when it was due (a crontab time passed during a restart is "
             "not run later).")
    return Problem(
        kind="periodic_missed", subject=entry.name, severity="warning", count=count,
        title=f"Periodic task {entry.name} missed its run due {due:%Y-%m-%d %H:%M:%S} UTC"
              + (f" ({count}{'' if complete else ' or more'} runs missed)" if count > 1 else ""),
        explanation=(f"{entry.name} ({entry.task}, {entry.words}) should have been sent at {due:%H:%M:%S} UTC; "
                     f"{'its last run was sent ' + last.strftime('%Y-%m-%d %H:%M:%S') + ' UTC' if last else 'no run of it is recorded'}"
                     f", and nothing since. {cause}"),
        fix="Check that celery beat runs (one beat, no more) and has this entry; run it now from its page if it must not wait.",
        evidence={"entry": entry.name, "task": entry.task, "schedule": entry.words, "due": due.isoformat(),
                  "last_run": last.isoformat() if last else None, "missed_runs": count, "all_counted": complete,
                  "beat_running": not beat_down, "counted_from": reference.isoformat(),
                  "missed_through": (now - grace).isoformat()},
        keys=keys, links=links + (["monitor:jobwatch"] if beat_down else []),
    )


def missed_count(entry, due, cutoff, most=WALK_STEPS, expect=next_expected):
    """(how many runs were due from `due` up to `cutoff` — the one due since is not missed yet —,
    whether that is all of them): by arithmetic for an interval; by walking the schedule for a
    crontab or solar one, at most `most` steps (Celery's reckoning is ~0.1 ms a step, and with beat
    down every entry is missing runs at once: "12 or more")."""
    every = entry.interval_seconds
    if every:
        return int((cutoff - due).total_seconds() // every) + 1, True
    count, moment = 0, due
    while moment is not None and moment <= cutoff:
        if count == most:
            return count, False
        count += 1
        following = expect(entry, moment)
        moment = following if following is not None and following > moment else None
    return max(count, 1), True


def sent_twice(entry, runs, now, expect=next_expected, **_):
    """Two runs where the schedule expects one: the newer sent before half the gap to its next —
    among the latest SENT_TWICE_RUNS (a second beat sends twice every time; one duplicate ends its
    finding a few runs later)."""
    latest = runs[:SENT_TWICE_RUNS]
    for newer, older in zip(latest, latest[1:], strict=False):
        due = expect(entry, older["enqueued_at"])
        if due is None or due <= older["enqueued_at"]:
            continue
        if newer["enqueued_at"] - older["enqueued_at"] < (due - older["enqueued_at"]) / 2:
            keys, links = about(entry)
            gap = (newer["enqueued_at"] - older["enqueued_at"]).total_seconds()
            return Problem(
                kind="periodic_duplicate", subject=entry.name, severity="warning", count=2,
                title=f"Periodic task {entry.name} was sent twice within {gap:.0f} s",
                explanation=(f"{entry.name} ({entry.words}) was sent at {older['enqueued_at']:%H:%M:%S} and again at "
                             f"{newer['enqueued_at']:%H:%M:%S} UTC, where one run was due: two beats are likely "
                             "running (a second `celery beat`, or workers started with -B)."),
                fix="Run exactly one celery beat for the app (not -B on several workers).",
                evidence={"entry": entry.name, "runs": [older["task_id"], newer["task_id"]],
                          "sent": [older["enqueued_at"].isoformat(), newer["enqueued_at"].isoformat()]},
                keys=keys, links=links,
            )
    return None


def not_started(entry, runs, now, **_):
    if not runs or runs[0]["state"] != "enqueued":
        return None
    run = runs[0]
    limit = timedelta(seconds=threshold("PERIODIC_NOT_STARTED_SECONDS", queue=entry.queue or None, task=entry.task,
                                        entry=entry.name))
    waited = now - run["enqueued_at"]
    if waited <= limit:
        return None
    queue = JobExecution.objects.filter(task_id=run["task_id"]).values_list("queue", flat=True).first() or entry.queue
    keys, links = about(entry)
    return Problem(
        kind="periodic_not_started", subject=entry.name, severity="warning", count=1,
        title=f"Periodic task {entry.name}: its run sent {int(waited.total_seconds() // 60)} min ago has not started",
        explanation=(f"The run of {entry.name} sent {run['enqueued_at']:%H:%M:%S} UTC waits in queue {queue or '?'}: "
                     "no worker has started it. The queue may have no consumer, be paused, or be behind."),
        fix="Look at the queue's page: its consumers, its depth and whether it is paused.",
        evidence={"entry": entry.name, "task_id": run["task_id"], "queue": queue, "sent": run["enqueued_at"].isoformat(),
                  "waited_seconds": round(waited.total_seconds())},
        keys=keys, links=links + ([f"queue:{queue}"] if queue and queue != entry.queue else []),
    )


def failing(entry, runs, now, **_):
    needed = int(threshold("PERIODIC_FAILING_RUNS", task=entry.task, entry=entry.name))
    finished = [run for run in runs if run["state"] in FINISHED][:needed]
    if len(finished) < needed or any(run["state"] != "failed" for run in finished):
        return None
    errors = dict(JobExecution.objects.filter(task_id__in=[run["task_id"] for run in finished])
                  .values_list("exception_type", "exception_message")[:1])
    error = next(iter(errors.items()), ("", ""))
    keys, links = about(entry)
    return Problem(
        kind="periodic_failing", subject=entry.name, severity="warning", count=len(finished),
        title=f"Periodic task {entry.name} failed its last {len(finished)} runs"
              + (f" ({error[0].rsplit('.', 1)[-1]})" if error[0] else ""),
        explanation=(f"Every one of the last {len(finished)} runs of {entry.name} ({entry.task}, {entry.words}) failed"
                     + (f"; the latest: {error[0]}: {short(error[1])}" if error[0] else "") + "."),
        fix="Open the latest failed run for its traceback; replay it once the cause is fixed.",
        evidence={"entry": entry.name, "runs": [run["task_id"] for run in finished], "exception": error[0]},
        keys=keys, links=links,
    )


def overlapping(entry, runs, now, expect=next_expected, **_):
    """A run that outlasted the time to the next one: finished runs by their runtime, a running
    run by how long it has been running."""
    for run in runs[:3]:
        gap_end = expect(entry, run["enqueued_at"])
        if gap_end is None or gap_end <= run["enqueued_at"]:
            continue
        gap = (gap_end - run["enqueued_at"]).total_seconds()
        if run["state"] in FINISHED and run["runtime"] is not None:
            took, running = run["runtime"], False
        elif run["state"] == "started" and run["started_at"] is not None:
            took, running = (now - run["started_at"]).total_seconds(), True
        else:
            continue
        if took > gap:
            keys, links = about(entry)
            return Problem(
                kind="periodic_overlap", subject=entry.name, severity="warning", count=1,
                title=f"Periodic task {entry.name} {'has been running' if running else 'ran'} {took:.0f} s, longer than "
                      f"the {gap:.0f} s to its next run",
                explanation=(f"A run of {entry.name} ({entry.words}) {'is still running after' if running else 'took'} "
                             f"{took:.0f} s, and the next was due {gap:.0f} s after it was sent: runs overlap (two at once "
                             "on the same data) or pile up behind each other."),
                fix="Make the task faster, schedule it less often, or guard it with a lock so a run skips while one runs.",
                evidence={"entry": entry.name, "task_id": run["task_id"], "seconds": round(took, 3), "gap_seconds": gap,
                          "running": running},
                keys=keys, links=links,
            )
    return None


def slow(entry, runs, now, **_):
    finished = [run for run in runs if run["state"] in FINISHED and run["runtime"] is not None]
    latest, earlier = (finished[0], finished[1:]) if finished else (None, [])
    if latest is None or len(earlier) < 5:
        return None
    usual = median(run["runtime"] for run in earlier)
    factor = threshold("PERIODIC_SLOW_FACTOR", task=entry.task, entry=entry.name)
    floor = threshold("PERIODIC_SLOW_MIN_SECONDS", task=entry.task, entry=entry.name)
    if latest["runtime"] < max(usual * factor, floor):
        return None
    keys, links = about(entry)
    return Problem(
        kind="periodic_slow", subject=entry.name, severity="warning", count=1,
        title=f"Periodic task {entry.name} took {latest['runtime']:.1f} s, {latest['runtime'] / usual:.0f}× its usual "
              f"{usual:.1f} s" if usual else f"Periodic task {entry.name} took {latest['runtime']:.1f} s",
        explanation=(f"The latest run of {entry.name} took {latest['runtime']:.1f} s; the median of its {len(earlier)} "
                     f"runs before is {usual:.2f} s."),
        fix="Compare the run with an earlier one (arguments, data size, a slow dependency).",
        evidence={"entry": entry.name, "task_id": latest["task_id"], "seconds": round(latest["runtime"], 3),
                  "usual_seconds": round(usual, 3)},
        keys=keys, links=links,
    )
