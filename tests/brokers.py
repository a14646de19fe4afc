"""Celery apps on real brokers for queue-inspection tests, and garbage to seed queues with."""

import base64
import contextlib
import json
import os
import pickle
import uuid

from celery import Celery

GARBAGE_PROBLEMS = {
    "random bytes": "not a kombu envelope (not JSON)",
    "pickle": "pickle: never unpickled",
    "truncated envelope": "not a kombu envelope (not JSON)",
}


def celery_app(broker_url, **transport_options):
    app = Celery("queue-tests", broker=broker_url, set_as_current=False)
    app.conf.broker_transport_options = transport_options
    app.conf.task_serializer = "json"
    return app


def garbage_envelopes(queue_envelope):
    """Raw queue entries that are not Celery JSON messages, keyed by what they are."""
    pickled = json.dumps({
        "body": base64.b64encode(pickle.dumps({"task": "evil"})).decode(),
        "content-type": "application/x-python-serialize", "content-encoding": "binary",
        "headers": {}, "properties": {"body_encoding": "base64", "delivery_tag": "p"},
    })
    return {
        "random bytes": os.urandom(64),
        "pickle": pickled.encode(),
        "truncated envelope": queue_envelope[: len(queue_envelope) // 2],
    }


def fill_redis_queue(url, queue, count, task_names):
    """`count` distinct real Celery messages in a Redis queue, fast: one message per task name
    sent through Celery, then copies with fresh ids pushed in pipelines. Returns the raw
    entries, which are all different."""
    import uuid

    import redis

    client = redis.Redis.from_url(url)
    app = celery_app(url)
    templates = []
    for name in task_names:
        task_id = str(uuid.uuid4())
        app.send_task(name, args=[1], queue=queue, task_id=task_id)
        templates.append((client.rpop(queue).decode(), task_id))
    entries = []
    for n in range(count):
        template, template_id = templates[n % len(templates)]
        entries.append(template.replace(template_id, str(uuid.uuid4())).encode())
    for start in range(0, count, 5000):
        client.lpush(queue, *entries[start : start + 5000])
    return set(entries)


RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672//"


def staff_with(*codenames, username="oncall"):
    """A staff user holding the given monitors permissions (fresh from the database)."""
    from django.contrib.auth.models import Permission, User

    user = User.objects.create_user(username, is_staff=True)
    for codename in codenames:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    return User.objects.get(pk=user.pk)


def broker_url_of(kind, redis_db):
    """The broker of a test parametrized over "redis" (a flushed db of its own) and "rabbitmq"."""
    from tests.workers import fresh_redis_url

    return fresh_redis_url(redis_db) if kind == "redis" else RABBITMQ_URL


@contextlib.contextmanager
def scratch_queue(broker_url, prefix):
    """A queue name of its own for one test; on RabbitMQ the queue is deleted afterwards (Redis
    drops an empty list by itself, and the test's db is flushed by the next one)."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    yield name
    if broker_url.startswith("amqp"):
        with celery_app(broker_url).connection_for_write() as connection:
            channel = connection.channel()
            channel.queue_delete(name)
            channel.close()
