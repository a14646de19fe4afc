"""The two figures /metrics gives for each periodic task — when it last succeeded, and how many of
its runs were missed in all — kept in PeriodicTally by the periodic detector on each pass.

Missed runs are a Prometheus counter, so they may only grow and must count each due time once. The
tally remembers the last missed due time it counted (`counted_through`); a pass adds the due times
after it up to the detector's cutoff (now less the grace). Counting by due time rather than by
"runs since the last run" means a reckoning that moves back (the latest run discarded or pruned)
or two passes at once count nothing twice. A crontab's due times are walked at most WALK_STEPS a
pass: a long outage is counted over the following passes, never lost."""

from datetime import timedelta

from django.db import transaction
from django.utils.dateparse import parse_datetime

from monitors.models import PeriodicTally


def keep_tally(expected, runs, problems, now, expect, steps=12):
    """`expected`: {name: Entry} the detector looked at; `runs`: {name: [recent run dicts, newest
    first]} as it read them (manual runs included: a run by hand that succeeded is a success);
    `problems`: its problems; `expect`: its next_expected (memoized for the pass)."""
    missed = {problem.subject: problem.evidence for problem in problems if problem.kind == "periodic_missed"}
    with transaction.atomic():
        tallies = {tally.entry: tally for tally in PeriodicTally.objects.select_for_update().filter(entry__in=list(runs))}
        new, changed = [], []
        for name, entry_runs in runs.items():
            tally = tallies.get(name) or PeriodicTally(entry=name, updated_at=now)
            moved = record_success(tally, entry_runs)
            if name in missed and name in expected:
                moved |= record_missed(tally, expected[name], missed[name], expect, steps)
            tally.updated_at = now
            if tally.pk is None:
                new.append(tally)
            elif moved:
                changed.append(tally)
        # In two statements whatever the schedule's size (500 entries: one pass, not 500 writes).
        PeriodicTally.objects.bulk_create(new, ignore_conflicts=True)
        PeriodicTally.objects.bulk_update(changed, ["last_success_at", "missed_runs_total", "counted_through", "updated_at"],
                                          batch_size=500)


def record_success(tally, runs):
    finished = [run["finished_at"] for run in runs if run["state"] == "succeeded" and run["finished_at"] is not None]
    latest = max(finished, default=None)
    if latest is None or (tally.last_success_at is not None and latest <= tally.last_success_at):
        return False
    tally.last_success_at = latest
    return True


def record_missed(tally, entry, evidence, expect, steps):
    """Add the due times in (counted_through, cutoff] — from the finding's first missed one."""
    due, cutoff = parse_datetime(evidence["due"]), parse_datetime(evidence["missed_through"])
    after = tally.counted_through
    every = entry.interval_seconds
    if every:
        step = timedelta(seconds=every)
        last = int((cutoff - due) / step)  # due + last·step is the last due time by the cutoff
        first = 0 if after is None or after < due else int((after - due) / step) + 1
        if last < first:
            return False
        tally.missed_runs_total += last - first + 1
        tally.counted_through = due + last * step
        return True
    moment = due if after is None or after < due else expect(entry, after)
    added = 0
    while moment is not None and moment <= cutoff and added < steps:
        if after is None or moment > after:
            added += 1
            after = moment
        following = expect(entry, moment)
        moment = following if following is not None and following > moment else None
    if not added:
        return False
    tally.missed_runs_total += added
    tally.counted_through = after
    return True
