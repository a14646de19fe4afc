"""The recorder's writer: events go into a bounded in-memory buffer and a background thread
writes them in batches, so a task never waits on the database.

- A full buffer drops the new event and counts it; it never blocks the task.
- A batch that fails for a connection problem (the database is down or restarting) stays in the
  buffer and is retried; a batch the database rejects for its content is dropped and counted, so
  one bad row cannot wedge the recorder.
- Each process has its own buffer and thread, started lazily; a forked child (the prefork pool)
  starts empty, so it never writes its parent's events twice.
- `flush()` at worker shutdown writes what is left.
- The counters are written with every flush into RecorderProcess, so they reach the database as
  soon as it is reachable again.
"""

import logging
import os
import socket
import sys
import threading
import time

from django.db import DatabaseError, connections
from django.utils import timezone

from monitors.conf import setting
from monitors.db import close_quietly, is_transient, one_transaction, private_connection, upsert
from monitors.recording.events import PAYLOAD_KEY
from monitors.recording.origin_tally import SavesCounted, origin_increments, write_origin_tallies

logger = logging.getLogger("monitors.recorder")


MAX_BACKOFF = 10.0
# Rows of counts, tallies or histograms kept for the next flush while the database is away: an
# hour of a busy site's minutes; past it they are dropped (and logged) rather than grow forever.
PENDING_KEYS_KEPT = 50_000
# The Celery worker this process belongs to (set in the worker's main process before its pool
# forks, so pool processes inherit it); empty in web servers and scripts.
WORKER = {"node": "", "queues": [], "main_pid": None}


class Counters:
    def __init__(self):
        self.recorded = 0
        self.dropped_overflow = 0
        self.dropped_error = 0
        self.write_errors = 0
        self.capture_errors = 0
        self.last_error = ""


class EventWriter:
    def __init__(self, buffer_size, batch_size, flush_interval, using):
        self.buffer_size = buffer_size
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.using = using
        self._reset()

    @classmethod
    def from_settings(cls):
        return cls(
            buffer_size=setting("RECORDER_BUFFER_SIZE"),
            batch_size=setting("RECORDER_BATCH_SIZE"),
            flush_interval=setting("RECORDER_FLUSH_INTERVAL"),
            using=setting("RECORDER_DATABASE"),
        )

    def _reset(self):
        self.pid = os.getpid()
        self.process_started_at = timezone.now()
        self.counters = Counters()
        self._events = []
        self._pending_payloads = []
        self._pending_counts = {}
        self._pending_tallies = {}
        self._pending_histograms = {}
        self._pending_origins = {}
        self._saves_counted = SavesCounted()
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._wake = threading.Event()
        self._thread = None
        self._counters_dirty = False
        self._last_heartbeat = 0.0
        self.heartbeat_seconds = 15.0
        self.stopped = False
        self._tracebacks_logged = set()
        self._db = None

    def submit(self, event):
        if self.pid != os.getpid():
            self._reset()  # first event in a forked child
        with self._lock:
            if len(self._events) >= self.buffer_size:
                self.counters.dropped_overflow += 1
                self._counters_dirty = True
                return
            self._events.append(event)
            full = len(self._events) >= self.batch_size
        if self._thread is None:
            self._start_thread()
        if full:
            self._wake.set()

    def count_capture_error(self, error):
        self.counters.capture_errors += 1
        self.counters.last_error = f"capture: {error!r}"[:2000]
        self._counters_dirty = True

    def _start_thread(self):
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name="jobwatch-recorder", daemon=True)
            self._thread.start()

    def _run(self):
        backoff = 0.0
        while True:
            if backoff:
                # The database is unreachable: wait out the back-off whatever arrives, so an
                # outage is not also a storm of connection attempts.
                time.sleep(backoff)
            else:
                self._wake.wait(self.flush_interval)
            self._wake.clear()
            ok = self.flush()
            if ok and not self._events:
                # Idle: close the connection rather than hold one per process forever; a busy
                # writer keeps it between batches.
                self.release_connection()
            backoff = 0.0 if ok else min(max(backoff * 2, self.flush_interval), MAX_BACKOFF)

    def flush(self):
        """Write everything buffered now. True when the database took it (or there was nothing)."""
        with self._flush_lock:
            with self._lock:
                batch, self._events = self._events, []
            if not batch and not self._counters_dirty and not self._heartbeat_due():
                return True
            try:
                self._write(batch)
            except DatabaseError as error:
                self._failed(error)
                if is_transient(error, connections[self.using].vendor):
                    self._keep_for_retry(batch)
                else:
                    self.counters.dropped_error += len(batch)
                return False
            except Exception as error:  # a bug of ours must not kill the thread
                self._failed(error)
                self.counters.dropped_error += len(batch)
                return False
            return True

    def _write(self, batch):
        # Imported here: the writer is created before Django's models are ready (Celery app import).
        from monitors.recording.upsert import fold_events, write_rows

        connection = self._connection()
        rows = fold_events(batch)
        self.counters.recorded += len(batch)
        try:
            with one_transaction(connection):
                for chunk in chunks(rows, self.batch_size):
                    write_rows(chunk, connection)
        except Exception as error:
            self.counters.recorded -= len(batch)
            if isinstance(error, DatabaseError) and is_transient(error, connection.vendor):
                close_quietly(connection)  # the next attempt reconnects
            raise
        self._write_side_data(batch, connection)
        # The counters in a transaction of their own: holding the jobs table while waiting for
        # the counters' table could deadlock with anything that locks both (a TRUNCATE, a
        # migration). They are cumulative, so if this write fails the next flush catches up.
        # Marked clean before they are read: a job thread that counts a drop while they are being
        # written marks them dirty again, so its count reaches the next flush instead of being
        # lost behind a row that is already out of date.
        self._counters_dirty = False
        try:
            with one_transaction(connection):
                self._write_counters(connection)
        except DatabaseError as error:
            self._counters_dirty = True
            logger.warning("Jobwatch recorder could not write its counters: %s", error)

    def _write_side_data(self, batch, connection):
        """A failed job's full arguments (JobPayload), the Prometheus counts (TaskCounter), the
        per-minute tallies (JobTally, OriginTally) and the time histograms (JobHistogram), each in a
        transaction of its own, after the batch's rows committed: one table per transaction, for
        the reason above. What cannot be written now for a passing reason (the database away)
        waits for the next flush — counts summed, so nothing is counted twice; payloads up to the
        buffer's size, counts up to PENDING_KEYS_KEPT keys —; what the database refuses for its
        content is dropped and logged, as a batch of jobs is, so that it cannot fail forever."""
        from monitors.recording.upsert import (add_increments, counter_increments, histogram_increments,  # see _write
                                               tally_increments, write_histograms, write_payloads, write_tallies,
                                               write_task_counters)

        self._pending_payloads = (self._pending_payloads + [event for event in batch if event.get(PAYLOAD_KEY)])[-self.buffer_size :]
        self._pending_counts = add_increments(self._pending_counts, counter_increments(batch))
        moment = timezone.now()
        minute = moment.replace(second=0, microsecond=0)
        self._pending_tallies = add_increments(self._pending_tallies, tally_increments(batch, minute))
        self._pending_histograms = add_increments(self._pending_histograms, histogram_increments(batch, moment))
        self._pending_origins = add_increments(self._pending_origins, origin_increments(batch, moment, self._saves_counted))
        for what, write, pending in (("payloads", write_payloads, "_pending_payloads"),
                                     ("counts", write_task_counters, "_pending_counts"),
                                     ("tallies", write_tallies, "_pending_tallies"),
                                     ("time histograms", write_histograms, "_pending_histograms"),
                                     ("origin tallies", write_origin_tallies, "_pending_origins")):
            data = getattr(self, pending)
            if not data:
                continue
            try:
                with one_transaction(connection):
                    write(data, connection)
            except DatabaseError as error:
                if is_transient(error, connection.vendor) and len(data) <= PENDING_KEYS_KEPT:
                    logger.warning("Jobwatch recorder could not write job %s (kept for the next flush): %s", what, error)
                    continue
                self.counters.last_error = f"write {what}: {error!r}"[:2000]
                self._counters_dirty = True
                logger.warning("Jobwatch recorder dropped %d rows of job %s it could not write: %s", len(data), what, error)
            setattr(self, pending, type(data)())

    def _heartbeat_due(self):
        return WORKER["main_pid"] == self.pid and time.monotonic() - self._last_heartbeat >= self.heartbeat_seconds

    def start_heartbeat(self):
        """Called in a worker's main process once it consumes: its row is written now and then
        every WORKER_HEARTBEAT_SECONDS, even when no job arrives (the Workers page's "alive")."""
        WORKER["main_pid"] = self.pid
        self.heartbeat_seconds = float(setting("WORKER_HEARTBEAT_SECONDS"))
        self.flush_interval = min(self.flush_interval, self.heartbeat_seconds)
        self._counters_dirty = True
        self._start_thread()
        self._wake.set()

    def _connection(self):
        """The writer's own database connection (see monitors/db.py), opened on first use and
        closed when the writer is idle."""
        if self._db is None:
            # The writer thread and the shutdown flush take turns with it.
            self._db = private_connection(self.using, "recorder")
        return self._db

    def release_connection(self):
        if self._db is not None:
            close_quietly(self._db)

    def _write_counters(self, connection):
        from monitors.models import RecorderProcess  # see _write

        counters = self.counters
        values = {
            "hostname": socket.gethostname(),
            "pid": self.pid,
            "process_started_at": self.process_started_at,
            "program": program_name(),
            "events_recorded": counters.recorded,
            "events_dropped_overflow": counters.dropped_overflow,
            "events_dropped_error": counters.dropped_error,
            "write_errors": counters.write_errors,
            "capture_errors": counters.capture_errors,
            "last_error": counters.last_error,
            "last_flush_at": timezone.now(),
            "node": WORKER["node"],
            # Only the worker's main process names its queues: the Workers page takes "up since",
            # the host and a clean stop from the row that has them.
            "queues": (WORKER["queues"] or None) if WORKER["main_pid"] == self.pid else None,
            "stopped_at": timezone.now() if self.stopped else None,
        }
        identity = ["hostname", "pid", "process_started_at"]
        upsert(connection, RecorderProcess, [values], conflict=identity, replace=[name for name in values if name not in identity])
        self._last_heartbeat = time.monotonic()

    def _failed(self, error):
        self.counters.write_errors += 1
        self.counters.last_error = f"write: {error!r}"[:2000]
        self._counters_dirty = True
        # A database error is expected in an outage and explains itself; anything else is a bug
        # worth a traceback, once per kind so that it cannot flood the log.
        unexpected = not isinstance(error, DatabaseError) and type(error) not in self._tracebacks_logged
        self._tracebacks_logged.add(type(error))
        logger.warning("Jobwatch recorder could not write to the database: %s", error, exc_info=unexpected)

    def _keep_for_retry(self, batch):
        with self._lock:
            room = max(self.buffer_size - len(self._events), 0)
            kept = batch[:room]
            self.counters.dropped_overflow += len(batch) - len(kept)
            self._events = kept + self._events

    def shutdown(self, timeout=5.0):
        """Write what is left; give up (and count it) if the database stays away past `timeout`."""
        if self.pid != os.getpid():
            return
        if WORKER["main_pid"] == self.pid:
            self.stopped = True  # the last row says the worker stopped, rather than vanished
            self._counters_dirty = True
        deadline = time.monotonic() + timeout
        while not self.flush() and self._events and time.monotonic() < deadline:
            time.sleep(0.5)
        with self._lock:
            lost, self._events = len(self._events), []
        if lost:
            self.counters.dropped_error += lost
            logger.error("Jobwatch recorder lost %d events at shutdown: the database was unreachable", lost)


def chunks(items, size):
    for start in range(0, len(items), size):
        yield items[start : start + size]


def program_name():
    """A short command line: "celery -A dashboard worker", "manage.py runserver"."""
    words = [os.path.basename(part) for part in sys.argv[:4]]
    if words and words[0] == "__main__.py":  # python -m celery
        words[0] = os.path.basename(os.path.dirname(sys.argv[0]))
    return " ".join(words)[:255]
