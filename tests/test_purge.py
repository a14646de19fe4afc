"""Purge and restore on real Redis and RabbitMQ: purge by task removes only that task's messages
(archived first) and leaves the others in order; restore puts them back and a worker runs them.
And the faults: the purging process killed midway, and Redis dropping its connections midway —
afterwards every original message is still queued or archived, none lost."""

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import redis

from monitors.actions import purge_messages, restore_messages
from monitors.brokers import open_broker
from monitors.models import ArchivedMessage, JobExecution
from monitors.actions.purge import MessageSelection, decode_raw
from tests.brokers import broker_url_of, celery_app, fill_redis_queue, scratch_queue, staff_with
from tests.workers import REPO, WorkerProcess, database_url_for_workers, fresh_redis_url, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def operator():
    return staff_with("purge_messages", "restore_messages")


@pytest.fixture(params=["redis", "rabbitmq"])
def broker_url(request):
    return broker_url_of(request.param, 8)


@pytest.fixture
def queue(broker_url):
    with scratch_queue(broker_url, "purge-test") as name:
        yield name


def queued_ids(app, queue):
    adapter = open_broker(app)
    try:
        return [message.task_id for message in adapter.peek(queue, 0, 1000)]
    finally:
        adapter.close()


def test_purge_by_task_removes_only_its_messages_keeps_the_order_and_restore_brings_them_back(tmp_path, broker_url, queue, operator):
    app = celery_app(broker_url)
    sent = [app.send_task("demo.tasks.echo" if n % 2 else "demo.tasks.noop", args=[n] if n % 2 else [], queue=queue).id
            for n in range(20)]
    echoes, others = sent[1::2], sent[0::2]
    wait_for(lambda: len(queued_ids(app, queue)) == 20, timeout=20, what="20 queued messages")

    wait_for(lambda: JobExecution.objects.filter(task_id__in=sent, state="enqueued").count() == 20, timeout=20,
             what="their enqueues recorded")
    selection = MessageSelection(task="demo.tasks.echo")
    preview = purge_messages(operator, queue, selection, dry_run=True, surface="command", app=app)
    assert preview.matched == 10 and queued_ids(app, queue) == sent  # the dry run changed nothing

    result = purge_messages(operator, queue, selection, surface="command", app=app)
    assert (result.log.outcome, result.log.matched, result.log.succeeded, result.log.failed) == ("succeeded", 10, 10, 0)
    assert queued_ids(app, queue) == others  # the rest, in their order
    archived = list(ArchivedMessage.objects.order_by("pk"))
    assert sorted(row.task_id for row in archived) == sorted(echoes)
    assert all(row.removed_at and row.action_id == result.log.pk and row.queue == queue for row in archived)
    # The purged jobs say so, not "enqueued" forever; the others are still waiting.
    states = dict(JobExecution.objects.filter(task_id__in=sent).values_list("task_id", "state"))
    assert {states[task_id] for task_id in echoes} == {"purged"} and {states[task_id] for task_id in others} == {"enqueued"}

    restored = restore_messages(operator, [row.pk for row in archived], surface="command", app=app)
    assert restored.log.succeeded == 10
    assert sorted(queued_ids(app, queue)) == sorted(sent)
    assert set(JobExecution.objects.filter(task_id__in=echoes).values_list("state", flat=True)) == {"enqueued"}
    again = restore_messages(operator, [row.pk for row in archived], surface="command", app=app)
    assert again.log.succeeded == 0 and again.log.failed == 0 and again.matched == 0  # never twice

    env = {"DATABASE_URL": database_url_for_workers(), "CELERY_BROKER_URL": broker_url}
    with WorkerProcess(tmp_path / "worker.log", env=env, queues=queue):
        wait_for(lambda: JobExecution.objects.filter(task_id__in=sent, state="succeeded").count() == 20, timeout=60,
                 what="every message, the restored ones too, to run")


# -- faults (Redis) --------------------------------------------------------------------------------

MESSAGES = 20_000


def fill(url, queue):
    """MESSAGES messages, half of them the task the purge removes; returns the raw entries."""
    return fill_redis_queue(url, queue, MESSAGES, ["demo.tasks.noop", "demo.tasks.echo"])


def assert_nothing_lost(url, queue, originals):
    queued = set(redis.Redis.from_url(url).lrange(queue, 0, -1))
    archived = {decode_raw(row): row for row in ArchivedMessage.objects.all()}
    lost = originals - queued - set(archived)
    assert not lost, f"{len(lost)} messages neither queued nor archived"
    # Marked removed means removed: no message is both queued and recorded as taken out.
    assert not [raw for raw, row in archived.items() if row.removed_at and raw in queued]
    return queued, archived


@pytest.mark.parametrize("kill_after", [0.0, 0.4])
def test_killing_the_purge_midway_loses_no_message(operator, kill_after):
    """Killed (SIGKILL: no clean-up) as soon as it has archived its first batch, and a little
    later: between archiving and removing, or between batches."""
    url, queue = fresh_redis_url(7), "purge-fault"
    originals = fill(url, queue)
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "DATABASE_URL": database_url_for_workers(),
           "CELERY_BROKER_URL": url}
    command = [sys.executable, "manage.py", "jobwatch_purge", "--queue", queue, "--task", "demo.tasks.echo",
               "--user", "oncall", "--yes", "--allow-large"]
    with subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as purge:
        wait_for(lambda: ArchivedMessage.objects.exists() or purge.poll() is not None, timeout=60, interval=0.01,
                 what="the purge to archive its first batch")
        time.sleep(kill_after)
        purge.send_signal(signal.SIGKILL)
        output = purge.communicate()[0].decode(errors="replace")
    assert purge.returncode == -signal.SIGKILL, output
    queued, archived = assert_nothing_lost(url, queue, originals)
    assert archived, "the purge was killed before it archived anything: kill it later"
    assert len(queued) > MESSAGES // 2, "the purge finished before it was killed: kill it sooner"


def test_redis_dropping_connections_midway_loses_no_message(operator, settings):
    url, queue = fresh_redis_url(7), "purge-fault"
    originals = fill(url, queue)
    settings.JOBWATCH = {**settings.JOBWATCH, "ACTION_INLINE_LIMIT": MESSAGES, "ACTION_BATCH_SIZE": 200}
    admin = redis.Redis.from_url(url)
    stop = threading.Event()

    def drop_connections():
        while not stop.is_set():
            time.sleep(0.1)
            admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")

    killer = threading.Thread(target=drop_connections)
    killer.start()
    try:
        purge_messages(operator, queue, MessageSelection(task="demo.tasks.echo"), surface="command", app=celery_app(url),
                       allow_large=True)
    except Exception as error:  # the broker went away: the purge may stop; it must not lose anything
        print(f"purge stopped: {error!r}")
    finally:
        stop.set()
        killer.join()
    assert_nothing_lost(url, queue, originals)
