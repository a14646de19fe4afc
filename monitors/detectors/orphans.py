"""Orphaned jobs: jobs whose database record is missing, and why.

Candidates are jobs still waiting (in the broker's queues, including ETA jobs held by workers, and
jobs recorded as enqueued) and jobs that failed with DoesNotExist. Each one's record references
(monitors.references) are checked in batches, one query per model per thousand keys. The cause
comes from what the recorder saw at enqueue time:

- rolled back: enqueued inside a transaction that never committed, so the record never existed;
- ran before commit: the job failed with DoesNotExist but the record exists now (the worker was
  faster than the commit);
- deleted after enqueue: the record existed (its transaction committed, or there was none) and
  is gone now;
- unknown: nothing recorded says which (e.g. a message published by a process Jobwatch does not
  watch).

One truth per job and per record: a job is counted once, where it was seen first (failed, then in
a queue, then recorded as waiting), and every job that needs the same missing record gets the
same cause — the record's — so that one order is never "rolled back" on one line and "deleted"
on the next. The finding's evidence lists the jobs by where they are, and the queued ones by
queue: the Orphans page, the finding's page and its purge buttons all count from those lists.
"""

from collections import defaultdict
from datetime import timedelta

from celery import current_app
from django.apps import apps
from django.db import connections, router
from django.db.models import Count

from monitors.brokers import BrokerUnavailable, PeekUnavailable, open_broker
from monitors.detectors.base import Problem, threshold
from monitors.models import JobExecution, QueueSample
from monitors.references import resolve_references

NAME = "orphans"
ROLLED_BACK, RAN_BEFORE_COMMIT, DELETED, UNKNOWN = "rolled_back", "ran_before_commit", "deleted_after_enqueue", "unknown"
CHECK_BATCH = 1000
JOB_IDS_KEPT = 500
# How long after its publish a job's enqueue may not be written yet (the recorder flushes every
# second or so; a busy database takes longer).
RECORDER_LAG = timedelta(seconds=30)
# The units of work (transactions, else requests) named as what a finding is about, at most.
UNITS_KEPT = 100

EXPLANATIONS = {
    ROLLED_BACK: (
        "These jobs were enqueued inside a transaction that rolled back: the record they need never "
        "existed. Usual fix: enqueue with transaction.on_commit(...) or task.delay_on_commit(...), so a "
        "rolled-back transaction enqueues nothing. The queued copies can be purged."
    ),
    RAN_BEFORE_COMMIT: (
        "These jobs failed with DoesNotExist although the record exists now: a worker picked them up "
        "before the transaction that created the record committed. Usual fix: enqueue on commit "
        "(transaction.on_commit / delay_on_commit). Replaying them now will succeed."
    ),
    DELETED: (
        "The record these jobs need was committed and later deleted, before the job ran. Usual fix: "
        "make the job tolerate a missing record (return quietly), or cancel its jobs when the record is "
        "deleted. The queued copies can be purged."
    ),
    UNKNOWN: (
        "The record these jobs need is missing, and nothing Jobwatch recorded about their enqueue says "
        "why (they may have been published by a process Jobwatch does not watch)."
    ),
}
SEVERITY = {ROLLED_BACK: "warning", RAN_BEFORE_COMMIT: "warning", DELETED: "warning", UNKNOWN: "info"}
FIXES = {
    ROLLED_BACK: "Enqueue on commit: transaction.on_commit(...) or .delay_on_commit(...); purge the queued copies.",
    RAN_BEFORE_COMMIT: "Enqueue on commit: transaction.on_commit(...) or .delay_on_commit(...); replay the failed jobs.",
    DELETED: "Let the job return quietly when its record is gone, or cancel its jobs when the record is deleted.",
    UNKNOWN: "Find the process that published these jobs; Jobwatch did not record their enqueue.",
}


class Candidate:
    """A job that may be an orphan. `where`: "failed", "queue <name>" (seen in the broker) or
    "recorded as waiting"; `queue`: the queue a purge would take it from, if any."""

    __slots__ = ("task_id", "task_name", "references", "where", "queue", "failed_missing", "published_at")

    def __init__(self, task_id, task_name, references, where, queue="", failed_missing=False, published_at=None):
        self.task_id, self.task_name, self.references, self.where, self.queue = task_id, task_name, references, where, queue
        self.failed_missing, self.published_at = failed_missing, published_at


def detect(now):
    candidates = {}
    # A job is counted where it is seen first: failed, else in a queue, else recorded as waiting.
    for candidate in (*failed_with_missing_record(now), *queued_messages(), *recorded_waiting()):
        candidates.setdefault(candidate.task_id, candidate)
    missing = missing_references(candidates.values())
    found = []  # (candidate, the references that are gone)
    for candidate in candidates.values():
        gone = [ref for ref in candidate.references if (ref["model"], str(ref["pk"])) in missing]
        if gone or candidate.failed_missing:
            found.append((candidate, gone))
    # What the recorder saw at enqueue time, for the orphans only: most queued jobs are fine.
    rows = recorded_rows({candidate.task_id for candidate, _ in found})
    judged = []  # (candidate, gone, row, the job's own cause)
    for candidate, gone in found:
        row = rows.get(candidate.task_id)
        if row is None and candidate.published_at and candidate.published_at > now - RECORDER_LAG:
            continue  # published by a watched process a moment ago: its enqueue is not written yet
        cause = cause_of(row, now, gone) if gone else cause_of_a_record_found_later(row, now)
        judged.append((candidate, gone, row, cause))
    by_record = causes_of_records(judged)
    orphans = defaultdict(list)
    for candidate, gone, row, cause in judged:
        if gone:  # the record's cause, which every job that needs it shares
            cause = min((by_record[record_key(ref)] for ref in gone), key=CAUSE_ORDER.index)
        if cause is None:
            continue  # its transaction may still commit: one cause, once it is known
        orphans[(candidate.task_name, cause)].append((candidate, gone, row))
    return [orphan_problem(task, cause, found) for (task, cause), found in sorted(orphans.items())] + enqueues_in_transactions(now)


# Which cause a record gets when its jobs tell different stories, strongest evidence first: one
# job enqueued after the record was committed proves it existed, so it was deleted; a rollback
# explains the rest; "unknown" only when no job says more; None (a transaction that may still
# commit) waits only when no job has settled it.
CAUSE_ORDER = [DELETED, ROLLED_BACK, UNKNOWN, None]


def record_key(ref):
    return ref["model"], str(ref["pk"])


def causes_of_records(judged):
    """{(model, pk): cause} for every missing record, from the causes of the jobs that need it."""
    causes = defaultdict(set)
    for _, gone, _, cause in judged:
        for ref in gone:
            causes[record_key(ref)].add(cause)
    return {key: min(found, key=CAUSE_ORDER.index) for key, found in causes.items()}


def failed_with_missing_record(now):
    window = timedelta(seconds=threshold("ORPHAN_WINDOW_SECONDS"))
    failed = (
        JobExecution.objects.filter(finished_at__gt=now - window, finished_at__lte=now, state="failed",
                                    exception_type__endswith=".DoesNotExist")
        .filter(references__isnull=False)
        .values_list("task_id", "task_name", "references")
    )
    for task_id, task_name, references in failed.iterator(chunk_size=2000):
        yield Candidate(task_id, task_name, references, "failed", failed_missing=True)


def recorded_waiting():
    cap = threshold("ORPHAN_SCAN_MESSAGES")
    waiting = (
        JobExecution.objects.filter(state="enqueued").filter(references__isnull=False)
        .order_by("enqueued_at").values_list("task_id", "task_name", "references", "queue")[:cap]
    )
    for task_id, task_name, references, queue in waiting.iterator(chunk_size=2000):
        yield Candidate(task_id, task_name, references, "recorded as waiting", queue=queue)


def queued_messages():
    """Messages in the broker's queues (and ETA jobs workers hold), read without consuming."""
    cap = threshold("ORPHAN_SCAN_MESSAGES")
    try:
        broker = open_broker()
    except BrokerUnavailable:
        return
    try:
        queues = set(QueueSample.objects.values_list("queue", flat=True).distinct()[:1000]) | broker.queue_names()
        scanned = 0
        for queue in sorted(queues):
            held = broker.unacked_messages(queue) if hasattr(broker, "unacked_messages") else []
            for message in (*held, *broker.scan(queue, clean=False)):
                scanned += 1
                if scanned > cap:
                    return
                if not message.decodable:
                    continue
                task = current_app.tasks.get(message.task_name)
                references = resolve_references(message.task_name, task, message.args, message.kwargs)
                if references:
                    yield Candidate(message.task_id, message.task_name, references, f"queue {queue}", queue=queue,
                                    published_at=message.published_at)
    except (BrokerUnavailable, PeekUnavailable):
        return
    finally:
        broker.close()


def missing_references(candidates):
    """{(model label, str(pk))} of referenced records that do not exist: one query per model per
    thousand keys."""
    wanted = defaultdict(set)
    for candidate in candidates:
        for ref in candidate.references or ():
            wanted[ref["model"]].add(ref["pk"])
    missing = set()
    for label, keys in wanted.items():
        try:
            model = apps.get_model(label)
        except (LookupError, ValueError):
            continue  # a model this site does not have: nothing to check against
        keys = list(keys)
        for start in range(0, len(keys), CHECK_BATCH):
            chunk = keys[start : start + CHECK_BATCH]
            try:
                existing = {str(pk) for pk in model._default_manager.filter(pk__in=chunk).values_list("pk", flat=True)}
            except (ValueError, TypeError):
                continue  # keys of the wrong type for this model
            missing.update((label, str(pk)) for pk in chunk if str(pk) not in existing)
    return missing


ROW_FIELDS = ("task_id", "enqueued_at", "started_at", "origin_in_atomic", "origin_deferred", "origin_transaction",
              "origin_committed_at", "origin_receiver", "queue", "state", "origin_request_id", "origin_model", "origin_pk",
              "origin_created")


def recorded_rows(candidates):
    """What the recorder knows of each candidate, by task id. On PostgreSQL one query with the
    ids as one array parameter (`= ANY`): a hundred thousand queued jobs cost one round trip, not
    a hundred IN lists of a thousand literals to parse and plan."""
    ids = list(candidates)
    connection = connections[router.db_for_read(JobExecution)]  # a replica, where reads go to one
    if connection.vendor == "postgresql":
        table = connection.ops.quote_name(JobExecution._meta.db_table)
        columns = ", ".join(connection.ops.quote_name(name) for name in ROW_FIELDS)
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT {columns} FROM {table} WHERE task_id = ANY(%s)", [ids])
            return {row[0]: dict(zip(ROW_FIELDS, row, strict=True)) for row in cursor.fetchall()}
    rows = {}
    for start in range(0, len(ids), CHECK_BATCH):
        for row in JobExecution.objects.filter(task_id__in=ids[start : start + CHECK_BATCH]).values(*ROW_FIELDS):
            rows[row["task_id"]] = row
    return rows


def cause_of(row, now, gone=()):
    """Why the record is missing, as this job's enqueue tells it; None while it cannot be told yet
    (the enqueuing transaction may still commit), so that a job is not reported under one cause
    and then another."""
    if row is None:
        return UNKNOWN
    if row["origin_committed_at"] is not None or row["origin_deferred"] or row["origin_in_atomic"] is False:
        return DELETED  # the record was committed (or never inside a transaction): deleted since
    if row["origin_created"] is False and any(
            (ref["model"], str(ref["pk"])) == (row["origin_model"], row["origin_pk"]) for ref in gone):
        return DELETED  # enqueued by an update of that very record: it existed before the transaction
    if row["origin_in_atomic"] and row["origin_transaction"] and row["enqueued_at"]:
        grace = timedelta(seconds=threshold("ORPHAN_COMMIT_GRACE_SECONDS"))
        return ROLLED_BACK if row["enqueued_at"] < now - grace else None
    return UNKNOWN


def cause_of_a_record_found_later(row, now):
    """The job failed with DoesNotExist and a record with that key exists now: the worker ran
    before the commit — unless the transaction never committed, and the key was taken since by
    another row (databases such as SQLite reuse a rolled-back insert's key)."""
    if row and row["origin_in_atomic"] and row["origin_transaction"] and not row["origin_deferred"] \
            and row["origin_committed_at"] is None:
        return cause_of(row, now)
    return RAN_BEFORE_COMMIT


def listed_by(found, place):
    listed = defaultdict(list)
    for candidate, _, _ in found[:JOB_IDS_KEPT]:
        listed[place(candidate)].append(candidate.task_id)
    return dict(listed)


def orphan_problem(task, cause, found):
    places = defaultdict(int)
    models = defaultdict(list)
    receivers = defaultdict(int)
    units = set()
    commit_lags = []
    for candidate, gone, row in found:
        places[candidate.where] += 1
        if row and len(units) < UNITS_KEPT and (row["origin_transaction"] or row["origin_request_id"]):
            units.add(f"transaction:{row['origin_transaction']}" if row["origin_transaction"] else f"request:{row['origin_request_id']}")
        for ref in gone or candidate.references:
            if len(models[ref["model"]]) < 10:
                models[ref["model"]].append(ref["pk"])
        if row:
            receivers[row["origin_receiver"] or "?"] += 1
            if cause == RAN_BEFORE_COMMIT and row["origin_committed_at"] and row["started_at"]:
                commit_lags.append((row["origin_committed_at"] - row["started_at"]).total_seconds())
    evidence = {
        "cause": cause,
        "jobs": len(found),
        "where": dict(places),
        "missing_records": dict(models),
        "enqueued_by": dict(receivers),
        # By where each job is (the same keys as "where"), at most JOB_IDS_KEPT in all.
        "job_ids": listed_by(found, lambda candidate: candidate.where),
        # What a purge can take, by queue: jobs seen in a queue or recorded as waiting in one.
        "queued_job_ids": listed_by([entry for entry in found if entry[0].queue and entry[0].where != "failed"],
                                    lambda candidate: candidate.queue),
    }
    if commit_lags:
        evidence["commit_after_start_seconds_max"] = round(max(commit_lags), 3)
    label = {ROLLED_BACK: "rolled back", RAN_BEFORE_COMMIT: "ran before commit", DELETED: "record deleted after enqueue",
             UNKNOWN: "record missing"}[cause]
    return Problem(
        kind="orphaned_jobs",
        subject=f"{task}:{cause}",
        severity=SEVERITY[cause],
        title=f"{len(found)} orphaned {task} job{'s' if len(found) != 1 else ''}: {label}",
        explanation=EXPLANATIONS[cause],
        evidence=evidence,
        count=len(found),
        fix=FIXES[cause],
        # Jobs of several tasks orphaned by the same transactions (an order and its payment
        # deleted together) are one problem: the units of work that enqueued them say so.
        keys=[f"task:{task}", *sorted(units)],
        links=[f"receiver:{receiver}" for receiver in receivers if receiver != "?"],
    )


def enqueues_in_transactions(now):
    """The leading indicator: origins that enqueue inside an atomic block without on_commit, even
    before anything has gone wrong."""
    window = timedelta(seconds=threshold("ORPHAN_WINDOW_SECONDS"))
    risky = (
        JobExecution.objects.filter(enqueued_at__gt=now - window, enqueued_at__lte=now, origin_in_atomic=True, origin_deferred="")
        .exclude(origin_receiver="")
        .values("origin_receiver", "task_name", "origin_model")
        .annotate(jobs=Count("id"))
        .filter(jobs__gte=threshold("IN_TRANSACTION_MIN_JOBS"))
    )
    problems = []
    for row in risky:
        receiver, task = row["origin_receiver"], row["task_name"]
        problems.append(Problem(
            kind="enqueue_in_transaction",
            subject=f"{receiver}:{task}",
            severity="info",
            title=f"{receiver} enqueues {task} inside a transaction, not on commit",
            explanation=(
                f"{row['jobs']} {task} jobs in the last {int(window.total_seconds() / 60)} minutes were enqueued by "
                f"{receiver} while a transaction was open. If it rolls back, the job runs for a record that never "
                "existed; if the worker is fast, it runs before the commit. Use transaction.on_commit(lambda: "
                f"{task.rsplit('.', 1)[-1]}.delay(...)) or {task.rsplit('.', 1)[-1]}.delay_on_commit(...)."
            ),
            evidence={"jobs": row["jobs"], "receiver": receiver, "task": task, "model": row["origin_model"]},
            count=row["jobs"],
            fix=f"Enqueue on commit: transaction.on_commit(lambda: {task.rsplit('.', 1)[-1]}.delay(...)) or .delay_on_commit(...).",
            keys=[f"receiver:{receiver}", f"task:{task}"],
        ))
    return problems
