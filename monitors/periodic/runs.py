"""What the recorder kept of each entry's runs (the jobs whose origin_entry names it), and when
its schedule says it should run next."""

from datetime import UTC, datetime

from celery.schedules import crontab
from celery.schedules import schedule as every_interval
from celery.utils.time import ffwd
from django.db import connections, router
from django.utils import timezone

from monitors.models import JobExecution

RUN_COLUMNS = ["task_id", "state", "enqueued_at", "started_at", "finished_at", "runtime", "origin_kind"]
TIMES = ("enqueued_at", "started_at", "finished_at")


def recent_runs(names, count=30):
    """{entry name: [run dicts, newest first]}, at most `count` each, through the partial index
    on (origin_entry, enqueued_at): on PostgreSQL one statement (a LATERAL read per entry),
    elsewhere one query per entry."""
    names = list(names)
    if not names:
        return {}
    found = {name: [] for name in names}
    connection = connections[router.db_for_read(JobExecution)]  # a replica, where reads go to one
    if connection.vendor == "postgresql":
        table = connection.ops.quote_name(JobExecution._meta.db_table)
        # Times as epoch seconds, made datetimes here: Django's loader for timestamptz is three
        # times the cost, and 500 entries' 30 runs are 15,000 rows.
        columns = ", ".join(f"date_part('epoch', j.{column})" if column in TIMES else f"j.{column}" for column in RUN_COLUMNS)
        # `origin_entry <> ''` repeats the partial index's condition: PostgreSQL cannot prove it
        # from `= n.name` (a name unknown when planning), and without it reads every job newest
        # first through the enqueued_at index — a second per entry on millions of jobs.
        sql = (f"SELECT n.name, {columns} FROM unnest(%s::text[]) AS n(name), LATERAL ("
               f"SELECT * FROM {table} WHERE origin_entry = n.name AND origin_entry <> '' AND enqueued_at IS NOT NULL "
               f"ORDER BY enqueued_at DESC LIMIT %s) AS j")
        with connection.cursor() as cursor:
            cursor.execute(sql, [names, count])
            for name, *values in cursor.fetchall():
                run = dict(zip(RUN_COLUMNS, values, strict=True))
                for column in TIMES:
                    if run[column] is not None:
                        run[column] = datetime.fromtimestamp(run[column], UTC)
                found[name].append(run)
        return found
    for name in names:
        found[name] = list(JobExecution.objects.filter(origin_entry=name, enqueued_at__isnull=False).exclude(origin_entry="")
                           .order_by("-enqueued_at").values(*RUN_COLUMNS)[:count])
    return found


def reckoned_from(entry, last_run, beat_started_at):
    """The moment an entry's next run is counted from: its last run recorded, else its scheduler's
    record of it, else beat's start. A django-celery-beat row whose last run its scheduler cleared
    (disabling does, so that enabling sends no catch-up run) counts from when it was last changed,
    as its scheduler does: an entry enabled again is not late for the runs it had while disabled."""
    reference = last_run or entry.scheduler_last_run_at or beat_started_at
    if entry.source == "django-celery-beat" and entry.scheduler_last_run_at is None and entry.changed_at is not None:
        reference = max(reference, entry.changed_at) if reference is not None else entry.changed_at
    return reference


def next_expected(entry, last_run):
    """When the entry should run next after `last_run`, by its schedule's own reckoning (Celery's
    remaining_estimate, which counts from the schedule's clock: added back to that clock, the
    answer is a moment that does not depend on when it is asked); None when it cannot say — no run
    to count from, a one-off that ran, a schedule that raises."""
    if last_run is None or (entry.one_off and entry.scheduler_last_run_at is not None):
        return None
    if type(entry.schedule) is every_interval and not entry.schedule.relative:
        # What Celery's reckoning comes to for a plain interval, without its clock and timezone
        # work (80 µs a call: the detector asks for 500 entries' recent runs).
        return datetime.fromtimestamp(round((last_run + entry.schedule.run_every).timestamp(), 3), UTC)
    if isinstance(entry.schedule, crontab):
        # The crontab's own next time: its last run in its zone fast-forwarded to the next
        # matching minute, made absolute — no clock read (half the cost) and right across DST.
        try:
            # In the schedule's zone first: Celery 5.4 matches the fields against the time as given.
            start, delta, _ = entry.schedule.remaining_delta(last_run.astimezone(entry.schedule.tz), ffwd=ffwd)
            moment = start + delta
        except Exception:  # noqa: BLE001 (a subclass that reckons otherwise: Celery's estimate below)
            moment = None
        if moment is not None and timezone.is_aware(moment):
            return datetime.fromtimestamp(round(moment.astimezone(UTC).timestamp()), UTC)
    try:
        clock = entry.schedule.now()
        remaining = entry.schedule.remaining_estimate(last_run)
    except Exception:  # noqa: BLE001 (a custom schedule: shown without a next run)
        return None
    # In UTC: an aware time in the app's zone plus a timedelta is wall-clock arithmetic, an hour
    # out across a daylight-saving change.
    moment = clock.astimezone(UTC) + remaining if timezone.is_aware(clock) else clock + remaining
    moment = (moment if timezone.is_aware(moment) else timezone.make_aware(moment, UTC)).astimezone(UTC)
    # To the second: the two readings of the clock above are apart by however long the machine
    # took between them (milliseconds when busy), which could put a crontab's 03:00 a hair before
    # 03:00 — and the run due after that at 03:00 the same day. Beat itself keeps to the second.
    return datetime.fromtimestamp(round(moment.timestamp()), UTC)


def summary(runs):
    """The last run, how many of the runs finished well, and their runtimes (oldest first)."""
    finished = [run for run in runs if run["state"] in ("succeeded", "failed")]
    succeeded = sum(1 for run in finished if run["state"] == "succeeded")
    return {
        "last": runs[0] if runs else None,
        "success_rate": round(100 * succeeded / len(finished)) if finished else None,
        "durations": [run["runtime"] for run in reversed(runs)],
        "states": [run["state"] for run in reversed(runs)],
    }
