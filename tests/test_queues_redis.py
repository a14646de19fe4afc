"""Queue inspection on real Redis: priority levels, key prefixes, ETA jobs held in `unacked`, a
queue nobody consumes, and garbage — each shown correctly, none crashing, nothing disturbed."""

import time

import pytest
import redis

from monitors.brokers.redis import RedisBroker
from tests.brokers import GARBAGE_PROBLEMS, celery_app, garbage_envelopes
from tests.workers import WorkerProcess, database_url_for_workers, fresh_redis_url, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def broker_url():
    return fresh_redis_url(7)


def test_it_sums_priority_levels_and_reads_them_in_the_order_workers_take_them(broker_url):
    app = celery_app(broker_url, global_keyprefix="shop:", priority_steps=list(range(10)), queue_order_strategy="priority")
    for priority in (9, 0, 5, 5):
        app.send_task("demo.tasks.noop", queue="work", priority=priority)
    broker = RedisBroker(app)

    stats = broker.stats(["work"])["work"]
    assert stats.depth == 4 and stats.depth_by_priority == {0: 1, 5: 2, 9: 1}
    assert stats.oldest_published_at is not None
    assert [m.priority for m in broker.peek("work")] == [0, 5, 5, 9]
    assert [m.priority for m in broker.peek("work", offset=1, limit=2)] == [5, 5]
    assert broker.queue_names() == {"work"}
    assert all(key.startswith(b"shop:") for key in redis.Redis.from_url(broker_url).keys("*"))


def test_peek_and_scan_leave_every_message_where_it_was(broker_url):
    app = celery_app(broker_url)
    ids = [app.send_task("demo.tasks.echo", args=[n], queue="orders").id for n in range(30)]
    client = redis.Redis.from_url(broker_url)
    before = client.lrange("orders", 0, -1)
    broker = RedisBroker(app)

    page = broker.peek("orders", offset=0, limit=10)
    assert [m.task_id for m in page] == ids[:10]  # the head is the oldest: next to run
    assert [m.args for m in broker.peek("orders", offset=25, limit=10)] == [[n] for n in range(25, 30)]
    assert sorted(m.task_id for m in broker.scan("orders", chunk=7)) == sorted(ids)
    assert client.lrange("orders", 0, -1) == before


def test_it_shows_garbage_as_undecodable_with_its_size(broker_url):
    app = celery_app(broker_url)
    app.send_task("demo.tasks.echo", args=["x" * 5_000_000], queue="mixed")
    client = redis.Redis.from_url(broker_url)
    big = client.lindex("mixed", 0)
    for raw in garbage_envelopes(big).values():
        client.lpush("mixed", raw)
    broker = RedisBroker(app)

    stats = broker.stats(["mixed"])["mixed"]
    messages = broker.peek("mixed")
    assert stats.depth == 4 and len(messages) == 4
    assert messages[0].decodable and messages[0].size > 5_000_000
    assert [m.problem for m in messages[1:]] == list(GARBAGE_PROBLEMS.values())
    assert all(m.size > 0 for m in messages)
    assert sum(1 for _ in broker.scan("mixed")) == 4


def test_it_counts_eta_jobs_a_worker_holds_in_unacked(broker_url, tmp_path):
    app = celery_app(broker_url)
    env = {"DATABASE_URL": database_url_for_workers(), "CELERY_BROKER_URL": broker_url}
    with WorkerProcess(tmp_path / "worker.log", env=env, queues="later"):
        scheduled = [app.send_task("demo.tasks.noop", queue="later", countdown=600).id for _ in range(3)]
        broker = RedisBroker(app)
        # Wait for the settled state: once, 1 message was seen still listed while 3 were in unacked.
        stats = wait_for(
            lambda: (lambda s: s if s.in_flight == 3 and s.depth == 0 else None)(broker.stats(["later"])["later"]),
            what="3 jobs in unacked and none left in the list",
        )
        assert stats.depth == 0 and stats.scheduled == 3
        assert sorted(m.task_id for m in broker.unacked_messages("later")) == sorted(scheduled)
    # A warm shutdown hands them back to the queue, where they are counted as waiting.
    assert wait_for(lambda: RedisBroker(app).stats(["later"])["later"].depth == 3, what="jobs restored")


def test_it_lists_a_queue_with_a_backlog_and_no_consumer(broker_url):
    app = celery_app(broker_url)
    for _ in range(5):
        app.send_task("demo.tasks.noop", queue="abandoned")
    time.sleep(0.05)
    broker = RedisBroker(app)
    stats = broker.stats(["abandoned", "never-used"])
    assert "abandoned" in broker.queue_names()
    assert stats["abandoned"].depth == 5 and stats["abandoned"].exists_on_broker
    assert stats["never-used"].depth == 0 and not stats["never-used"].exists_on_broker
