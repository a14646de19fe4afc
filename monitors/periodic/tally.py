"""The two figures /metrics gives for each periodic task — when it last succeeded, and how many of
its runs were missed in all — kept in PeriodicTally by the periodic detector on each pass.

Missed runs are a Prometheus counter, so they may only grow: the detector's finding says how
many runs are missed since the run (or beat start) it counts from; the tally remembers that
starting point and how many of the gap's runs it counted already, and adds only the new ones.
A run sent ends the gap; the next gap counts from zero."""

from django.db import transaction
from django.utils.dateparse import parse_datetime

from monitors.models import PeriodicTally


def keep_tally(runs, problems, now):
    """`runs`: {entry: [recent run dicts, newest first]} as the detector read them (manual runs
    included: a run by hand that succeeded is a success); `problems`: the detector's problems."""
    missed = {problem.subject: problem.evidence for problem in problems if problem.kind == "periodic_missed"}
    with transaction.atomic():
        tallies = {tally.entry: tally for tally in PeriodicTally.objects.select_for_update().filter(entry__in=list(runs))}
        new, changed = [], []
        for name, entry_runs in runs.items():
            tally = tallies.get(name) or PeriodicTally(entry=name, updated_at=now)
            moved = record_success(tally, entry_runs)
            if name in missed:
                moved |= record_missed(tally, missed[name])
            tally.updated_at = now
            if tally.pk is None:
                new.append(tally)
            elif moved:
                changed.append(tally)
        # In two statements whatever the schedule's size (500 entries: one pass, not 500 writes).
        PeriodicTally.objects.bulk_create(new, ignore_conflicts=True)
        PeriodicTally.objects.bulk_update(changed, ["last_success_at", "missed_runs_total", "gap_from", "gap_missed",
                                                    "updated_at"], batch_size=500)


def record_success(tally, runs):
    finished = [run["finished_at"] for run in runs if run["state"] == "succeeded" and run["finished_at"] is not None]
    latest = max(finished, default=None)
    if latest is None or (tally.last_success_at is not None and latest <= tally.last_success_at):
        return False
    tally.last_success_at = latest
    return True


def record_missed(tally, evidence):
    counted_from, count = evidence["counted_from"], int(evidence["missed_runs"])
    if tally.gap_from is None or tally.gap_from.isoformat() != counted_from:
        tally.gap_from, tally.gap_missed = parse_datetime(counted_from), 0
    new = count - tally.gap_missed
    if new <= 0:
        return False
    tally.missed_runs_total += new
    tally.gap_missed = count
    return True
