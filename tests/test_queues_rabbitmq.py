"""Queue inspection on real RabbitMQ: counts by passive declare and by the management API, and a
peek that says beforehand what it does (messages come back flagged redelivered)."""

import uuid

import pytest
from django.test import override_settings

from monitors.brokers import PeekUnavailable
from monitors.brokers.rabbitmq import RabbitMQBroker
from tests.brokers import celery_app
from tests.workers import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]
BROKER_URL = "amqp://guest:guest@127.0.0.1:5672//"


@pytest.fixture
def queue():
    name = f"jobwatch-test-{uuid.uuid4().hex[:8]}"
    yield name
    app = celery_app(BROKER_URL)
    with app.connection_for_write() as connection:
        channel = connection.channel()
        channel.queue_delete(name)
        channel.close()


def test_it_counts_messages_by_passive_declare_without_the_management_api(queue):
    app = celery_app(BROKER_URL)
    for _ in range(3):
        app.send_task("demo.tasks.noop", queue=queue)
    with override_settings(JOBWATCH={"RABBITMQ_MANAGEMENT_URL": ""}):
        broker = RabbitMQBroker(app)
        stats = broker.stats([queue, "jobwatch-no-such-queue"])
        assert stats[queue].depth == 3 and stats[queue].consumers == 0
        assert not stats["jobwatch-no-such-queue"].exists_on_broker
        with pytest.raises(PeekUnavailable, match="management plugin"):
            broker.peek(queue)
        broker.close()


def test_it_reads_counts_and_peeks_through_the_management_api(queue):
    app = celery_app(BROKER_URL)
    ids = [app.send_task("demo.tasks.echo", args=[n], kwargs={"token": "t"}, queue=queue).id for n in range(4)]
    broker = RabbitMQBroker(app)
    assert broker.management is not None, "bin/test enables the rabbitmq_management plugin"
    assert "redelivered" in broker.peek_warning

    # The management API refreshes its counts every few seconds.
    stats = wait_for(lambda: (lambda s: s if s.depth == 4 else None)(broker.stats([queue])[queue]), timeout=20, what="counts")
    assert stats.in_flight == 0 and stats.consumers == 0
    assert queue in broker.queue_names()

    first = broker.peek(queue, limit=2)
    assert [m.task_id for m in first] == ids[:2]
    assert first[0].kwargs == {"token": "[redacted]"} and first[0].args == [0]
    again = broker.peek(queue, offset=1, limit=3)
    assert [m.task_id for m in again] == ids[1:]
    assert again[0].redelivered  # the first peek put it back: RabbitMQ flags it
    broker.close()
