"""The recorder's merge: a job's events arrive from several processes in any order and batches;
the stored row must not depend on that order, in Python or in SQL, on PostgreSQL or SQLite."""

from datetime import UTC, datetime, timedelta

import pytest
from django.db import connections
from hypothesis import HealthCheck, given, settings, strategies as st

from monitors.models import JobExecution
from monitors.recording.upsert import COLUMNS, fold_events, write_rows

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def at(seconds):
    return T0 + timedelta(seconds=seconds)


def lifecycle(task_id):
    """A job enqueued in a transaction, retried once, then succeeded: every event the recorder
    would write for it, in the order they happened. Each names the job's first publish time, as
    the message header carries it to every process (the key of its day partition on PostgreSQL)."""
    return [{**event, "enqueued_at": at(0)} for event in lifecycle_events(task_id)]


def lifecycle_events(task_id):
    return [
        {"task_id": task_id, "task_name": "shop.charge", "state": "enqueued", "progress": 0, "queue": "payments",
         "routing_key": "payments", "args": [7], "kwargs": {}, "payload_size": 7, "payload_complete": True,
         "enqueued_at": at(0), "updated_at": at(0), "origin_kind": "save", "origin_model": "shop.Payment",
         "origin_pk": "7", "origin_receiver": "shop.receivers.charge", "origin_in_atomic": True,
         "origin_transaction": "abc", "references": [{"arg": "payment_id", "model": "shop.Payment", "pk": 7}]},
        {"task_id": task_id, "task_name": "shop.charge", "state": "enqueued", "progress": 0,
         "origin_committed_at": at(0.1), "updated_at": at(0.1)},
        {"task_id": task_id, "task_name": "shop.charge", "state": "received", "progress": 1, "queue": "payments",
         "received_at": at(1), "worker": "w1", "updated_at": at(1)},
        {"task_id": task_id, "task_name": "shop.charge", "state": "started", "progress": 2, "queue": "payments",
         "started_at": at(2), "worker": "w1", "worker_pid": 11, "args": [7], "kwargs": {}, "updated_at": at(2)},
        {"task_id": task_id, "task_name": "shop.charge", "state": "retried", "progress": 3, "retries": 1,
         "eta": at(30), "queue": "payments", "updated_at": at(3)},
        {"task_id": task_id, "task_name": "shop.charge", "state": "retried", "progress": 3, "finished_at": at(3),
         "runtime": 1.0, "worker": "w1", "worker_pid": 11, "exception_type": "ConnectionError",
         "exception_message": "gateway down", "traceback": "Traceback ...", "error_progress": 3, "updated_at": at(3)},
        {"task_id": task_id, "task_name": "shop.charge", "state": "received", "progress": 5, "retries": 1,
         "received_at": at(31), "worker": "w2", "updated_at": at(31)},
        {"task_id": task_id, "task_name": "shop.charge", "state": "started", "progress": 6, "retries": 1,
         "started_at": at(32), "worker": "w2", "worker_pid": 22, "updated_at": at(32)},
        {"task_id": task_id, "task_name": "shop.charge", "state": "succeeded", "progress": 7, "retries": 1,
         "finished_at": at(33), "runtime": 0.5, "worker": "w2", "worker_pid": 22, "result": "'ok'", "updated_at": at(33)},
    ]


EXPECTED = {
    "task_name": "shop.charge", "state": "succeeded", "progress": 7, "retries": 1, "queue": "payments",
    "args": [7], "enqueued_at": at(0), "received_at": at(31), "started_at": at(32), "finished_at": at(33),
    "eta": at(30), "runtime": 0.5, "worker": "w2", "worker_pid": 22, "result": "'ok'",
    "exception_type": "ConnectionError", "exception_message": "gateway down", "origin_kind": "save",
    "origin_receiver": "shop.receivers.charge", "origin_committed_at": at(0.1), "origin_in_atomic": True,
    "references": [{"arg": "payment_id", "model": "shop.Payment", "pk": 7}], "updated_at": at(33),
}


def check(row):
    for name, value in EXPECTED.items():
        assert row[name] == value, name


def stored(task_id, using):
    job = JobExecution.objects.using(using).get(task_id=task_id)
    return {name: getattr(job, name) for name in COLUMNS}


def arrival_orders():
    events = st.permutations(range(len(lifecycle("x"))))
    return st.tuples(events, st.lists(st.integers(1, 9), min_size=1, max_size=9))


def batches(order, cuts, task_id):
    events = lifecycle(task_id)
    arrived = [events[index] for index in order]
    groups, start = [], 0
    for size in cuts:
        if start >= len(arrived):
            break
        groups.append(arrived[start : start + size])
        start += size
    if start < len(arrived):
        groups.append(arrived[start:])
    return groups


@given(arrival_orders())
def test_it_folds_events_in_any_order_to_the_same_row(case):
    order, _ = case
    events = lifecycle("job")
    (row,) = fold_events([events[index] for index in order])
    check(row)


@pytest.mark.django_db(databases=["default", "embedded"], transaction=True)
@pytest.mark.parametrize("using", ["default", "embedded"])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=arrival_orders(), number=st.integers(0, 10**9))
def test_it_upserts_events_in_any_order_and_batching_to_the_same_row(using, case, number):
    task_id = f"job-{number}-{using}"
    JobExecution.objects.using(using).filter(task_id=task_id).delete()
    for batch in batches(*case, task_id):
        write_rows(fold_events(batch), connections[using])
    check(stored(task_id, using))


def headerless(task_id):
    """The same job sent by a producer without Jobwatch: no enqueue event, and no event knows when it
    was published; the worker's events carry its receive time (the main process stamps it)."""
    return [{key: value for key, value in event.items() if key != "enqueued_at"}
            for event in lifecycle_events(task_id)[2:]]


@pytest.mark.django_db(databases=["default", "embedded"], transaction=True)
@pytest.mark.parametrize("using", ["default", "embedded"])
def test_a_job_published_without_the_header_is_one_row_whatever_the_batches(using):
    """On PostgreSQL each event batch that does not know the key finds the row the job already has;
    the first one keys it by the earliest time it knows."""
    events = headerless(f"bare-{using}")
    for batch in ([events[0]], events[1:3], [events[3]], events[4:]):
        write_rows(fold_events(batch), connections[using])
    (job,) = JobExecution.objects.using(using).filter(task_id=f"bare-{using}")
    assert job.state == "succeeded" and job.retries == 1 and job.finished_at == at(33)
    if connections[using].vendor == "postgresql":
        assert job.enqueued_at == at(1)  # the first receive: what its first event knew


@pytest.mark.django_db(transaction=True)
def test_one_task_id_published_at_two_times_is_two_rows_on_postgresql_and_its_page_shows_the_newest(admin_client):
    """A project that re-sends a task id (its own idempotency key, days apart): PostgreSQL keeps a row
    per publish (each lives in its day's partition); the job page shows the newest, not an error."""
    if connections["default"].vendor != "postgresql":
        pytest.skip("SQLite keeps one row per task id")
    for start in (at(0), at(86400 * 2)):
        write_rows(fold_events([{**event, "enqueued_at": start} for event in lifecycle_events("same-id")[:1]]),
                   connections["default"])
    assert JobExecution.objects.filter(task_id="same-id").count() == 2
    page = admin_client.get("/jobwatch/api/jobs/same-id/")
    assert page.status_code == 200 and page.json()["job"]["enqueued_at"].startswith(at(86400 * 2).date().isoformat())


# Text as jobs produce it: quotes, backslashes, braces and commas (an array literal's syntax),
# any Unicode, and NUL, which PostgreSQL cannot store.
ANY_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40)
JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers(-2**53, 2**53) | ANY_TEXT,
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ANY_TEXT, inner, max_size=4),
                           max_leaves=10)


@pytest.mark.django_db(databases=["default", "embedded"], transaction=True)
@pytest.mark.parametrize("using", ["default", "embedded"])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(message=ANY_TEXT, result=ANY_TEXT, worker=ANY_TEXT, args=st.lists(JSON_VALUES, max_size=4),
       pid=st.none() | st.integers(0, 2**31 - 1), runtime=st.none() | st.floats(0, 1e9))
def test_any_value_a_job_carries_is_stored_as_it_was_and_nul_as_a_replacement_character(using, message, result, worker, args, pid,
                                                                                         runtime):
    """The values of one batch travel to PostgreSQL as arrays, one per column, bound apart from the
    statement; whatever a job carries must come back as it went, and a NUL (which neither text nor
    jsonb can hold) must not fail the batch it is in."""
    from monitors.recording.payload import PayloadCleaner

    cleaned_args, _, _, _ = PayloadCleaner.from_settings().clean(args, {})
    failed = {"task_id": f"odd-{using}", "task_name": "shop.odd", "state": "failed", "progress": 2,
              "enqueued_at": at(0), "updated_at": at(1), "args": cleaned_args, "kwargs": {}, "worker": worker,
              "worker_pid": pid, "runtime": runtime, "exception_type": "ValueError", "exception_message": message,
              "result": result, "error_progress": 2}
    neighbour = {"task_id": f"plain-{using}", "task_name": "shop.plain", "state": "enqueued", "progress": 0,
                 "enqueued_at": at(0), "updated_at": at(0)}
    JobExecution.objects.using(using).filter(task_id__in=[failed["task_id"], neighbour["task_id"]]).delete()
    write_rows(fold_events([failed, neighbour]), connections[using])
    row = stored(failed["task_id"], using)

    def without_nul(text):
        return text.replace("\x00", "\ufffd")

    assert row["exception_message"] == without_nul(message)
    assert row["result"] == without_nul(result)
    assert row["worker"] == without_nul(worker)[:JobExecution._meta.get_field("worker").max_length]
    assert row["worker_pid"] == pid and row["runtime"] == runtime
    assert row["args"] == cleaned_args and "\x00" not in repr(cleaned_args)
    assert JobExecution.objects.using(using).filter(task_id=neighbour["task_id"]).exists()


@pytest.mark.django_db(databases=["default", "embedded"], transaction=True)
@pytest.mark.parametrize("using", ["default", "embedded"])
def test_a_column_of_whole_and_fractional_numbers_is_written_in_one_batch(using):
    """A batch of counters holds counts (whole numbers) and sums of seconds (fractions) in one column;
    on PostgreSQL the column travels as one binary array, which must hold one type."""
    from monitors.db import upsert
    from monitors.models import TaskCounter

    labels = {"name": "shop.odd", "hostname": "h", "queue_name": "q", "exception": "", "le": ""}
    rows = [{"metric": "succeeded", **labels, "value": 3}, {"metric": "runtime_sum", **labels, "value": 0.25},
            {"metric": "failed", **labels, "value": True}]
    for _ in range(2):
        upsert(connections[using], TaskCounter, rows, conflict=["metric", *labels], add=["value"])
    stored = dict(TaskCounter.objects.using(using).filter(name="shop.odd").values_list("metric", "value"))
    assert stored == {"succeeded": 6, "runtime_sum": 0.5, "failed": 2}
