"""Jobs enqueued by each origin a save, a delete or a signal set off, per minute and per hour
(OriginTally), counted by the recorder's writer from the enqueue events it writes, so that the
Fan-out page reads counts rather than jobs: a week of a busy site's history is millions of job
rows but 168 hourly rows per origin and task (and the minutes of the window's two ends).

Saves have to be counted, not just jobs: "jobs per save" is what tells a storm from a busy model.
A save's jobs are all enqueued by the process that saved (its receivers run there, and so do the
on_commit callbacks that defer them), so that process's writer sees each of them. It remembers
the saves it has counted lately and counts each save once per receiver (`saves`) and once in all
(`model_saves`), in the row of its first job: a sum over any rows counts a save once. A save
whose later jobs arrive after the writer has forgotten it (SAVES_REMEMBERED other saves in
between) is counted again, so jobs per save can read a little low, never high. A save is counted
the same way in its minute's row and in its hour's.

The same counting fills the table from the recorded jobs (count_history): migration 0023 counts
the last week, so an upgraded site's Fan-out page has it at once, and `manage.py
jobwatch_count_origins` counts a week too big for an upgrade, or more days.
"""

from collections import OrderedDict
from datetime import UTC

from monitors.db import upsert
from monitors.recording.events import COUNTS_KEY

# The origins the Fan-out page is about: a job enqueued by a save's, a delete's or another
# signal's receiver, or from an overridden save()/delete().
FANOUT_KINDS = ("save", "delete", "signal")
SAVES_REMEMBERED = 20_000
MINUTE, HOUR = 60, 3600
LABELS = ["start", "resolution", "origin_kind", "origin_model", "origin_receiver", "task_name"]
COUNTS = ["jobs", "saved_jobs", "saves", "model_saves"]


class SavesCounted:
    """The saves counted lately (the newest SAVES_REMEMBERED), with the receivers each was
    counted for."""

    def __init__(self, size=SAVES_REMEMBERED):
        self.size = size
        self._receivers = OrderedDict()

    def first(self, save_id, receiver):
        """(whether this is the save's first job from `receiver`, whether it is its first job at
        all), remembering it."""
        receivers = self._receivers.get(save_id)
        first_of_save = receivers is None
        if first_of_save:
            receivers = self._receivers[save_id] = set()
            if len(self._receivers) > self.size:
                self._receivers.popitem(last=False)
        if receiver in receivers:
            return False, first_of_save
        receivers.add(receiver)
        return True, first_of_save


def minute_of(moment):
    """The start of the UTC minute `moment` falls in (hours are UTC hours whatever TIME_ZONE)."""
    return moment.astimezone(UTC).replace(second=0, microsecond=0)


def count_enqueue(totals, minute, job, counted):
    """Add one enqueued job (a dict of JobExecution's origin fields and task_name) to `totals`,
    {(start, resolution, kind, model, receiver, task): (jobs, saved_jobs, saves, model_saves)}, in
    `minute` (see minute_of) and its hour; a job no save or signal set off is not counted."""
    kind, receiver = job.get("origin_kind"), job.get("origin_receiver")
    if kind not in FANOUT_KINDS or not receiver:
        return
    origin = (kind, (job.get("origin_model") or "")[:255], receiver[:255], (job.get("task_name") or "")[:255])
    saved_job = first_for_receiver = first_of_save = 0
    save_id = job.get("origin_save")
    if save_id:
        saved_job = 1
        first_for_receiver, first_of_save = counted.first(save_id, receiver)
    for key in ((minute, MINUTE, *origin), (minute.replace(minute=0), HOUR, *origin)):
        jobs, saved_jobs, saves, model_saves = totals.get(key, (0, 0, 0, 0))
        totals[key] = (jobs + 1, saved_jobs + saved_job, saves + first_for_receiver, model_saves + first_of_save)


def origin_increments(events, moment, counted):
    """The OriginTally increments of a writer's batch: its first publishes (the events counted as
    "sent": a retry's republish carries no origin), in the minute and hour the batch is written."""
    totals, minute = {}, minute_of(moment)
    for event in events:
        if event.get("origin_kind") in FANOUT_KINDS and any(count[0] == "sent" for count in event.get(COUNTS_KEY) or ()):
            count_enqueue(totals, minute, event, counted)
    return totals


def write_origin_tallies(increments, connection):
    """Add origin_increments() to OriginTally, in one statement (sorted, as for the counters)."""
    from monitors.models import OriginTally  # the writer is created before Django's models are ready

    upsert(connection, OriginTally, tally_rows(increments), conflict=LABELS, add=COUNTS)


def tally_rows(increments):
    return [{**dict(zip(LABELS, key, strict=True)), **dict(zip(COUNTS, values, strict=True))}
            for key, values in sorted(increments.items())]


def count_history(jobs, tallies, connection, since, until=None, chunk=5000):
    """Add to `tallies` (the OriginTally model) the jobs of `jobs` (JobExecution's) enqueued from
    `since` until `until` — by default until the first minute the table already counts (what the
    recorder wrote since the upgrade, or an earlier run of this), so that no job is counted twice
    and running it again counts only what is older. Each job goes in the minute and hour it was
    enqueued; an hour the recorder has begun is added to. Models are passed in so that a migration
    can hand over its own. Returns (the jobs counted, the rows written)."""
    counted_from = first_counted(tallies.objects.using(connection.alias))
    until = min(moment for moment in (until, counted_from) if moment is not None) if (until or counted_from) else None
    rows = jobs.objects.using(connection.alias).filter(enqueued_at__gte=since, origin_kind__in=FANOUT_KINDS).exclude(origin_receiver="")
    if until is not None:
        rows = rows.filter(enqueued_at__lt=until)
    counted, totals, seen = SavesCounted(), {}, 0
    for job in (rows.order_by("enqueued_at", "id")
                .values("enqueued_at", "origin_kind", "origin_model", "origin_receiver", "origin_save", "task_name")
                .iterator(chunk_size=chunk)):
        count_enqueue(totals, minute_of(job["enqueued_at"]), job, counted)
        seen += 1
    written = tally_rows(totals)
    for start in range(0, len(written), chunk):
        upsert(connection, tallies, written[start:start + chunk], conflict=LABELS, add=COUNTS)
    return seen, len(written)


def first_counted(tallies):
    """The moment from which the table counts every job: its first minute row — or its first hour
    row, when the hours reach further back than the minutes (kept fewer days)."""
    first = {resolution: tallies.filter(resolution=resolution).order_by("start").values_list("start", flat=True).first()
             for resolution in (MINUTE, HOUR)}
    if first[HOUR] is not None and (first[MINUTE] is None or first[HOUR] < first[MINUTE].replace(minute=0)):
        return first[HOUR]
    return first[MINUTE]
