"""The queue table and its history: discovery from broker, routes and job history; samples
written by the periodic task; roll-ups; a broker that is down."""

import time
from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone
from kombu import Queue

from monitors.models import JobExecution, QueueSample
from monitors.queues import snapshot, time_to_drain, trend
from monitors.retention import roll_up_samples
from monitors.sampling import latest_queue_rows, sample_queues
from tests.brokers import celery_app
from tests.workers import (
    WorkerProcess,
    database_url_for_workers,
    fresh_redis_url,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def recorded_job(queue, state, minutes_ago, **fields):
    at = timezone.now() - timedelta(minutes=minutes_ago)
    return JobExecution.objects.create(task_id=f"{queue}-{state}-{minutes_ago}-{len(fields)}", task_name="t", queue=queue,
                                       state=state, enqueued_at=at, updated_at=at, **fields)


def test_it_finds_queues_on_the_broker_in_the_routes_and_in_the_history():
    app = celery_app(fresh_redis_url(6))
    app.conf.task_queues = [Queue("emails")]
    app.conf.task_routes = {"reports.*": {"queue": "reports"}}
    app.send_task("demo.tasks.noop", queue="adhoc")
    recorded_job("retired", "enqueued", minutes_ago=5)

    rows = {row.name: row for row in snapshot(app, ask_workers=False)}

    assert rows["adhoc"].found_in[0] == "broker"
    assert rows["emails"].found_in == ["routes"] and rows["reports"].found_in == ["routes"]
    assert rows["retired"].found_in == ["history"]
    assert rows["adhoc"].depth == 1 and rows["adhoc"].oldest_from == "message"


def test_it_takes_the_oldest_age_from_the_history_when_a_message_has_no_publish_time():
    app = celery_app(fresh_redis_url(6))
    with override_settings(JOBWATCH={"RECORDER_ENABLED": False}):
        app.send_task("demo.tasks.noop", queue="legacy")  # published without Jobwatch's header
    recorded_job("legacy", "enqueued", minutes_ago=30)

    (row,) = [row for row in snapshot(app, ask_workers=False) if row.name == "legacy"]
    assert row.oldest_from == "history" and 29 * 60 < row.oldest_age < 31 * 60


def test_a_broker_that_is_down_gives_rows_with_the_error_not_an_exception():
    app = celery_app("redis://127.0.0.1:1/0")
    recorded_job("payments", "enqueued", minutes_ago=2)
    rows = {row.name: row for row in snapshot(app, ask_workers=False)}
    assert "unreachable" in rows["payments"].error.lower() or "connect" in rows["payments"].error.lower()
    assert rows["payments"].depth is None and rows["payments"].oldest_from == "history"


def test_samples_are_written_once_per_interval_and_read_back_as_the_queue_table():
    app = celery_app(fresh_redis_url(6))
    for _ in range(4):
        app.send_task("demo.tasks.noop", queue="bulk")
    # Both samplers must run in the same 15-second interval: not just before its end.
    if time.time() % 15 > 12:
        time.sleep(15 - time.time() % 15 + 0.1)
    sample_queues(app)
    sample_queues(app)  # a second sampler in the same interval writes nothing new

    assert QueueSample.objects.filter(queue="bulk").count() == 1
    (row,) = [row for row in latest_queue_rows() if row.name == "bulk"]
    assert row.depth == 4 and row.trend in ("growing", "stalled", "steady")


def test_time_to_drain_and_trend():
    assert time_to_drain(600, arrivals=100, drains=400) == 120.0
    assert time_to_drain(600, arrivals=400, drains=100) is None
    assert time_to_drain(0, arrivals=0, drains=0) == 0.0
    assert trend(600, 400, 100) == "growing" and trend(600, 100, 400) == "draining"
    assert trend(600, 0, 0) == "stalled" and trend(0, 0, 0) == "idle"


def test_roll_up_keeps_the_worst_of_each_ten_minutes_and_prunes_past_retention():
    now = timezone.now().replace(minute=0, second=0, microsecond=0)
    old = now - timedelta(days=3)
    for seconds, depth in ((0, 5), (15, 50), (30, 7), (600, 1)):
        QueueSample.objects.create(queue="q", sampled_at=old + timedelta(seconds=seconds), depth=depth, oldest_age=depth * 2.0, arrivals_per_minute=depth)
    QueueSample.objects.create(queue="q", sampled_at=now - timedelta(days=500), resolution=600, depth=1)
    QueueSample.objects.create(queue="q", sampled_at=now - timedelta(minutes=1), depth=3)  # recent: stays raw

    folded, written, deleted = roll_up_samples(now=now)

    assert (folded, written, deleted) == (4, 2, 1)
    rolled = list(QueueSample.objects.filter(resolution=600).order_by("sampled_at").values_list("depth", "oldest_age", "arrivals_per_minute"))
    assert rolled == [(50, 100.0, 62 / 3), (1, 2.0, 1.0)]
    assert QueueSample.objects.filter(resolution=0).count() == 1


def test_beat_runs_the_sampler_on_a_real_worker(tmp_path):
    broker_url = fresh_redis_url(5)
    env = {"DATABASE_URL": database_url_for_workers(), "CELERY_BROKER_URL": broker_url, "JOBWATCH_SAMPLE_INTERVAL": "1"}
    worker = WorkerProcess(tmp_path / "worker.log", env=env)
    worker.command += ["--beat", "--schedule", str(tmp_path / "beat-schedule")]
    with worker:
        samples = wait_for(lambda: QueueSample.objects.filter(queue="celery").count() >= 2, timeout=60, what="two samples from beat")
    assert samples
    latest = QueueSample.objects.filter(queue="celery").latest("sampled_at")
    assert latest.broker == "redis" and latest.workers == [f"test@{__import__('socket').gethostname()}"]
