"""Every message carries the time it was published, so queue inspection can measure the age of
the oldest waiting job (Celery's own messages carry none)."""

import json
import time

import pytest
import redis
from celery import Celery

from monitors.recording.events import ENQUEUED_HEADER, PUBLISHED_HEADER, micros_datetime
from monitors.models import JobExecution
from monitors.recording.signals import flush_at_shutdown
from tests.workers import fresh_redis_url

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_it_stamps_each_published_message_with_its_publish_time():
    broker = fresh_redis_url(9)
    app = Celery("header-test", broker=broker, set_as_current=False)
    before = time.time()
    app.send_task("demo.tasks.noop", queue="nobody-consumes-this")
    after = time.time()

    raw = redis.Redis.from_url(broker).lindex("nobody-consumes-this", 0)
    headers = json.loads(raw)["headers"]
    assert before <= headers[PUBLISHED_HEADER] <= after
    # And the job's first publish, in whole microseconds: what every event of the job names as its
    # enqueued_at (the recorded row's, exactly).
    assert isinstance(headers[ENQUEUED_HEADER], int) and before <= headers[ENQUEUED_HEADER] / 1e6 <= after + 1e-6
    flush_at_shutdown()
    assert JobExecution.objects.get(task_id=headers["id"]).enqueued_at == micros_datetime(headers[ENQUEUED_HEADER])
