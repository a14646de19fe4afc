"""The two ways of writing job rows on PostgreSQL — upsert.write_rows (one INSERT … SELECT FROM
unnest) and staging.write_rows_by_copy (COPY into a staging table, then INSERT … SELECT) — must
store exactly the same rows from the same events: the same merge into rows already stored, the
same ids in the same order (the jobs list reads newest id first), the same text byte for byte."""

import random
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connections

from monitors.db import close_quietly, one_transaction, private_connection
from monitors.recording.staging import write_rows_by_copy
from monitors.recording.upsert import fold_events, write_rows
from monitors.recording.writer import chunks

T0 = datetime(2026, 12, 1, 9, 30, 15, 123456, tzinfo=UTC)

# Text a job really carries and COPY's text format must escape: its column and row separators
# (tab, newline), its escape character and NULL marker (\ and \N), its end-of-data line (\.),
# quotes, carriage returns, and characters outside ASCII. PostgreSQL text cannot hold NUL.
AWKWARD = 'it said "no" \'twice\'\tthen\r\nC:\\temp\\new \\N \\.\n\\.\nnaïve 日本語 🙂 \u2028end'
TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "/srv/app/shop/tasks.py", line 42, in charge\n'
    "    raise GatewayError(f\"{code}: {body!r}\")\n"
    "shop.errors.GatewayError: 502: b'<html>\\n\\t<h1>Bad \"gateway\"</h1>'\n" + AWKWARD
)
ARGS = [7, "O'Brien \"Bob\"", {"path": "C:\\new\\table", "lines": "a\nb\tc", "ok": True, "none": None,
                               "ratio": 0.1 + 0.2, "emoji": "🙂", "nested": [[], {}, [1.5e-7, -3]]}]
KWARGS = {"note": AWKWARD, "ids": list(range(5)), "quote": "\\\"", "empty": ""}


def at(job, seconds):
    return T0 + timedelta(seconds=job * 2 + seconds, microseconds=job)


def enqueued(task_id, job, **extra):
    return {"task_id": task_id, "task_name": "shop.tasks.charge", "state": "enqueued", "progress": 0,
            "queue": "payments", "exchange": "", "routing_key": "payments", "priority": None,
            "args": ARGS, "kwargs": KWARGS, "payload_size": 321, "payload_complete": True,
            "payload_hash": "0123456789abcdef", "enqueued_at": at(job, 0), "updated_at": at(job, 0),
            "origin_kind": "save", "origin_model": "shop.Order", "origin_pk": str(job), "origin_save": f"s{job}",
            "origin_created": job % 2 == 0, "origin_update_fields": ["status", "paid_at"] if job % 2 else None,
            "origin_receiver": "shop.receivers.order_saved", "origin_in_atomic": True, "origin_transaction": f"t{job}",
            "origin_request": "POST /checkout/\"quoted\"", "origin_request_id": f"r{job}",
            "references": [{"arg": 0, "model": "shop.Order", "pk": job}, {"arg": "note", "model": "shop.Note", "pk": "a\\b"}],
            **extra}


def committed(task_id, job):
    return {"task_id": task_id, "task_name": "shop.tasks.charge", "state": "enqueued", "progress": 0,
            "origin_committed_at": at(job, 0.05), "updated_at": at(job, 0.05), "enqueued_at": at(job, 0)}


def started(task_id, job, attempt, seconds):
    return {"task_id": task_id, "task_name": "shop.tasks.charge", "state": "started", "progress": attempt * 4 + 2,
            "retries": attempt, "queue": "payments", "started_at": at(job, seconds), "received_at": at(job, seconds - 0.01),
            "worker": f"celery@worker-{attempt}", "worker_pid": 4000 + attempt, "args": ARGS, "kwargs": KWARGS,
            "payload_size": 321, "payload_complete": True, "payload_hash": "0123456789abcdef",
            "enqueued_at": at(job, 0), "updated_at": at(job, seconds)}


def finished(task_id, job, attempt, seconds, state, failure=None):
    event = {"task_id": task_id, "task_name": "shop.tasks.charge", "state": state, "progress": attempt * 4 + 3,
             "retries": attempt, "circuit": "", "finished_at": at(job, seconds), "runtime": 0.1 + 0.2 * attempt,
             "worker": f"celery@worker-{attempt}", "worker_pid": 4000 + attempt, "enqueued_at": at(job, 0),
             "updated_at": at(job, seconds)}
    if state == "succeeded":
        event["result"] = f"{{'ok': True, 'text': {AWKWARD!r}}}"
    if failure:
        event.update(failure, error_progress=event["progress"])
    return event


def gateway_error(target="api.gateway.example:443", status=502):
    return {"exception_type": "shop.errors.GatewayError", "exception_message": f"502: {AWKWARD}", "traceback": TRACEBACK,
            "error_target": target, "error_status": status, "error_kind": "http"}


def retry_publish(task_id, job, seconds):
    # A retry republishes its own message: the end of attempt 0, with the next attempt's eta.
    return {"task_id": task_id, "task_name": "shop.tasks.charge", "state": "retried", "progress": 3, "retries": 1,
            "eta": at(job, seconds + 30), "queue": "payments", "enqueued_at": at(job, 0), "updated_at": at(job, seconds)}


def job_events(job):
    """Every event of one job, of a kind picked by its number."""
    task_id = f"job-{job:03d}-'\"\\"
    kind = job % 6
    if kind == 0:  # succeeded at once
        return [enqueued(task_id, job), committed(task_id, job), started(task_id, job, 0, 1),
                finished(task_id, job, 0, 1.5, "succeeded")]
    if kind == 1:  # failed, retried, then succeeded: the failed attempt's error stays
        return [enqueued(task_id, job), started(task_id, job, 0, 1), retry_publish(task_id, job, 1.2),
                finished(task_id, job, 0, 1.2, "retried", gateway_error()),
                started(task_id, job, 1, 31.5), finished(task_id, job, 1, 32, "succeeded")]
    if kind == 2:  # failed, retried, failed for good without naming a service: the service is cleared
        return [enqueued(task_id, job, priority=3), started(task_id, job, 0, 1), retry_publish(task_id, job, 1.2),
                finished(task_id, job, 0, 1.2, "retried", gateway_error()),
                started(task_id, job, 1, 31.5),
                finished(task_id, job, 1, 32, "failed", gateway_error(target="", status=None) | {"error_kind": ""})]
    if kind == 3:  # the enqueue was lost: only the worker's events, which carry the arguments too
        return [started(task_id, job, 0, 1), finished(task_id, job, 0, 2, "failed", gateway_error())]
    if kind == 4:  # failed and waiting for its retry's eta: two events of the same progress, either first
        return [enqueued(task_id, job), started(task_id, job, 0, 1), retry_publish(task_id, job, 1.2),
                finished(task_id, job, 0, 1.2, "retried", gateway_error())]
    # revoked while it waited, after it was received
    return [enqueued(task_id, job, expires=at(job, 60)),
            {"task_id": task_id, "task_name": "shop.tasks.charge", "state": "received", "progress": 1,
             "received_at": at(job, 0.5), "worker": "celery@worker-0", "enqueued_at": at(job, 0), "updated_at": at(job, 0.5)},
            {"task_id": task_id, "task_name": "shop.tasks.charge", "state": "revoked", "progress": 3,
             "finished_at": at(job, 2), "exception_message": "expired before it ran", "error_progress": 3,
             "enqueued_at": at(job, 0), "updated_at": at(job, 2)}]


def arrivals(seed, jobs=30):
    """Every job's events, shuffled, in two batches: the second merges into rows the first stored."""
    events = [event for job in range(jobs) for event in job_events(job)]
    random.Random(seed).shuffle(events)
    cut = len(events) // 2
    return events[:cut], events[cut:]


def stored_rows(connection):
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM monitors_jobexecution ORDER BY id")
        names = [column.name for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def write_all(batches, write, connection, chunk_size):
    """As EventWriter._write does: each batch folded, its rows in chunks, one transaction a batch."""
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE monitors_jobexecution RESTART IDENTITY")
    for batch in batches:
        with one_transaction(connection):
            for chunk in chunks(fold_events(batch), chunk_size):
                write(chunk, connection)
    return stored_rows(connection)


@pytest.fixture
def connection():
    if connections["default"].vendor != "postgresql":
        pytest.skip("COPY is PostgreSQL's")
    connection = private_connection("default", "staging-test")
    yield connection
    close_quietly(connection)  # the test database cannot be dropped while it is open


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("chunk_size", [500, 7])  # 7: several chunks in one transaction
def test_copy_and_upsert_store_the_same_rows(connection, seed, chunk_size):
    batches = arrivals(seed)
    by_upsert = write_all(batches, write_rows, connection, chunk_size)
    by_copy = write_all(batches, write_rows_by_copy, connection, chunk_size)

    assert len(by_upsert) == 30
    assert [row["task_id"] for row in by_copy] == [row["task_id"] for row in by_upsert]
    for upserted, copied in zip(by_upsert, by_copy, strict=True):
        assert copied == upserted, upserted["task_id"]
    # Identical could also mean equally mangled: the awkward text arrived whole.
    retried = next(row for row in by_copy if row["task_id"].startswith("job-001"))
    assert (retried["state"], retried["traceback"], retried["error_target"]) == ("succeeded", TRACEBACK, "api.gateway.example:443")
    assert retried["result"].endswith(f"{AWKWARD!r}}}")
    failed = next(row for row in by_copy if row["task_id"].startswith("job-002"))
    assert (failed["state"], failed["error_target"], failed["error_status"], failed["retries"]) == ("failed", "", None, 1)
    assert all(row["enqueued_at"] is not None for row in by_copy)


@pytest.mark.django_db(transaction=True)
def test_copy_writes_in_autocommit_too(connection):
    """Outside a transaction the staging table would empty itself at the COPY's commit."""
    events = [event for job in range(6) for event in job_events(job)]
    write_rows_by_copy(fold_events(events), connection)
    write_rows_by_copy(fold_events(events), connection)  # again: merged, not duplicated
    assert [row["state"] for row in stored_rows(connection)] == ["succeeded", "succeeded", "failed", "failed", "retried", "revoked"]
