"""Every message carries the time it was published, so queue inspection can measure the age of
the oldest waiting job (Celery's own messages carry none)."""

import json
import time

import pytest
import redis
from celery import Celery

from monitors.recording.events import PUBLISHED_HEADER
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
