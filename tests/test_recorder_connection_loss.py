"""A recorder whose open connection is cut (the server restarted, an admin ended the backend, a
proxy timed it out) keeps the batch and writes it once on the next flush: the loss reads as a
passing database error, never as a bug that drops the jobs or counts them twice."""

from datetime import UTC, datetime

import psycopg
import pytest
from django.db import OperationalError, connection

from monitors.db import execute_prepared, private_connection
from monitors.models import JobExecution, RecorderProcess
from monitors.recording.writer import EventWriter

pytestmark = [
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="ends a PostgreSQL backend"),
]


def end_backend(private):
    """End the server process behind `private`, as pg_terminate_backend by an admin would."""
    pid = private.connection.info.backend_pid
    settings = connection.settings_dict
    with psycopg.connect(host=settings["HOST"], port=settings["PORT"], user=settings["USER"], dbname="postgres",
                         autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [pid])


def job_event(task_id):
    moment = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    return {"task_id": task_id, "task_name": "shop.charge", "state": "enqueued", "progress": 0, "queue": "payments",
            "enqueued_at": moment, "updated_at": moment}


def test_a_statement_on_a_cut_connection_raises_djangos_operational_error():
    private = private_connection("default", "test")
    execute_prepared(private, "SELECT 1", [])
    end_backend(private)
    with pytest.raises(OperationalError):
        execute_prepared(private, "SELECT 1", [])
    private.close()


def test_a_batch_on_a_cut_connection_is_kept_and_written_once_by_the_next_flush():
    writer = EventWriter(buffer_size=100, batch_size=50, flush_interval=3600, using="default")
    writer.submit(job_event("before"))
    assert writer.flush(), writer.counters.last_error
    end_backend(writer._connection())

    writer.submit(job_event("during"))
    assert not writer.flush()
    counters = writer.counters
    assert (counters.write_errors, counters.dropped_error, counters.recorded) == (1, 0, 1)
    assert "OperationalError" in counters.last_error

    assert writer.flush(), counters.last_error
    assert set(JobExecution.objects.values_list("task_id", flat=True)) == {"before", "during"}
    assert (counters.recorded, counters.dropped_error, counters.dropped_overflow) == (2, 0, 0)
    row = RecorderProcess.objects.get(pid=writer.pid, process_started_at=writer.process_started_at)
    assert (row.events_recorded, row.events_dropped_error, row.write_errors) == (2, 0, 1)
    writer.release_connection()
