"""Pausing a queue on every worker, and what each worker does about it.

The paused queues are rows of QueuePause (the operator's side is monitors/actions/queues.py).
Each worker keeps itself in line with them:

- when it starts (celeryd_after_setup, before its consumer exists), it leaves out the paused
  queues among those it was told to consume (-Q), so not one message of theirs is fetched;
- every QUEUE_PAUSE_CHECK_SECONDS, and at once when a pause or resume is broadcast (the
  `jobwatch_sync_pauses` remote control command), it stops consuming its queues that are paused
  and starts again on those it stopped for a pause that is over.

A worker resumes only the queues it stopped itself, for a pause: a queue an operator stopped with
Celery's own cancel_consumer stays stopped, and a worker never starts on a queue it was not told
to consume. Messages a worker had already fetched when the pause reached it still run (Celery
cannot hand them back); with prefetch that is at most its concurrency × prefetch multiplier.
"""

import logging

from django.db import DatabaseError

from monitors.conf import setting
from monitors.db import close_quietly, private_connection
from monitors.models import QueuePause

logger = logging.getLogger("monitors.pausing")


def paused_queues():
    """{queue: QueuePause} of every paused queue."""
    return {row.queue: row for row in QueuePause.objects.order_by("queue")}


def mark_paused(rows):
    """Set `pause` on the queue table's rows (monitors.queues.QueueRow) of paused queues."""
    paused = paused_queues()
    for row in rows:
        row.pause = paused.get(row.name)
    return rows


def paused_among(queues):
    """The names among `queues` that are paused, read in a worker's main process. On a connection
    of its own, closed at once: a connection Django's handler (or its pool) opened here before the
    pool processes fork would be inherited by them, and their first query would find it closed."""
    if not queues:
        return set()
    connection = private_connection("default", "pausing", connect_timeout=5)
    try:
        table = connection.ops.quote_name(QueuePause._meta.db_table)
        marks = ", ".join(["%s"] * len(queues))
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT queue FROM {table} WHERE queue IN ({marks})", sorted(queues))
            return {row[0] for row in cursor.fetchall()}
    finally:
        close_quietly(connection)


def hold_at_start(worker):
    """A worker about to start: leave out its paused queues before its consumer starts."""
    queues = worker.app.amqp.queues
    worker.jobwatch_own_queues = set(queues.consume_from)
    worker.jobwatch_held = set()
    try:
        paused = paused_among(worker.jobwatch_own_queues)
    except DatabaseError as error:
        logger.warning("Jobwatch could not read the paused queues at start (%s): it checks again every %s s",
                       error, setting("QUEUE_PAUSE_CHECK_SECONDS"))
        return set()
    for queue in sorted(paused):
        queues.deselect(queue)
        worker.jobwatch_held.add(queue)
        logger.warning("Jobwatch: queue %s is paused; this worker will not consume it until it is resumed", queue)
    return paused


def sync(consumer):
    """Stop consuming this worker's paused queues; start again on those a pause held that are no
    longer paused. Runs in the consumer's thread (its timer, or a remote control command).
    Returns what it did, for the broadcast's reply."""
    worker = consumer.controller
    queues = consumer.app.amqp.queues
    if getattr(worker, "jobwatch_own_queues", None) is None:  # started without the start-up hook
        worker.jobwatch_own_queues, worker.jobwatch_held = set(queues.consume_from), set()
    own, held = worker.jobwatch_own_queues, worker.jobwatch_held
    try:
        paused = paused_among(own)
    except DatabaseError as error:
        logger.warning("Jobwatch could not read the paused queues (%s): nothing changed", error)
        return {"error": str(error)[:200]}
    consuming = set(queues.consume_from)
    stopped = sorted(own & paused & consuming)
    for queue in stopped:
        consumer.cancel_task_queue(queue)
        held.add(queue)
        logger.warning("Jobwatch: queue %s is paused; this worker stopped consuming it", queue)
    started = sorted(held - paused)
    for queue in started:
        consumer.add_task_queue(queue)
        held.discard(queue)
        logger.warning("Jobwatch: queue %s was resumed; this worker consumes it again", queue)
    return {"stopped": stopped, "started": started, "held": sorted(held)}
