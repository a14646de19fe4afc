"""Celery and Django signal handlers that feed the recorder.

Each handler is wrapped by `guarded`: whatever goes wrong while recording is counted and logged,
and never raised into the user's publish or task.
"""

import atexit
import functools
import logging
import socket
import sys
import threading
import time

from celery import current_app
from celery import signals as celery_signals
from celery._state import get_current_task
from celery.exceptions import NotRegistered
from django.core import signals as django_signals
from django.db import connections

from monitors.conf import setting
from monitors.recording import events, origin
from monitors.recording.writer import WORKER, EventWriter
from monitors.references import resolve_references

logger = logging.getLogger("monitors.recorder")

_writer = None
_logged = set()
_exit_flush_registered = False
_writer_lock = threading.Lock()
# Per-thread: the event built before a publish, submitted once the publish succeeded.
_publishing = threading.local()
# Per pool process: monotonic start of each running task, failures awaiting task_postrun, and
# jobs whose run ends by waiting on an open circuit (task_retry → task_postrun).
_started = {}
_failures = {}
_waiting = {}
# Worker main process: the attempt number of received jobs beyond their first, for the rare event
# it reports itself (a lost pool process, a hard time limit), whose signal carries no request.
_received_attempts = {}
RECEIVED_ATTEMPTS_KEPT = 10_000
# The header django-celery-beat puts on the messages of its periodic tasks: the entry's name.
PERIODIC_TASK_HEADER = "periodic_task_name"
# The header an operator's Run now adds (who): the run is the entry's, by hand.
MANUAL_RUN_HEADER = "jobwatch_manual_run"
# The hostname label of the counts this process makes (publishes, and what a worker's main process
# reports itself), as celery-exporter labels them.
HOSTNAME = socket.gethostname()


def get_writer():
    global _writer
    if _writer is None:
        with _writer_lock:
            if _writer is None:
                _writer = EventWriter.from_settings()
    return _writer


def submit(event):
    get_writer().submit(event)


def guarded(handler):
    @functools.wraps(handler)
    def safe_handler(*args, **kwargs):
        if not setting("RECORDER_ENABLED"):
            return
        try:
            handler(*args, **kwargs)
        except Exception as error:
            get_writer().count_capture_error(error)
            # The traceback once per kind of failure; a recorder bug must not flood the logs.
            kind = (handler.__name__, type(error))
            logger.warning("Jobwatch recorder: %s failed: %r", handler.__name__, error, exc_info=kind not in _logged)
            _logged.add(kind)

    return safe_handler


@guarded
def before_task_publish(sender=None, body=None, exchange=None, routing_key=None, headers=None,
                        properties=None, declare=None, **extra):
    published = time.time()
    if headers is not None:
        headers[events.PUBLISHED_HEADER] = published  # lets queue inspection measure a message's age
    fields = events.message_fields(body, headers)
    if not fields["task_id"]:
        return
    published_at = events.epoch_datetime(published)
    event = events.enqueued_event(fields, exchange, routing_key, declare, properties, published_at)
    running = get_current_task()
    is_retry = running is not None and getattr(running.request, "id", None) == fields["task_id"]
    first = events.enqueued_micros(headers or {})
    if first is None and is_retry:
        # A republish of the running job that did not carry its headers over: its request has them.
        first = events.enqueued_micros(running.request)
    if first is None and not is_retry:
        first = round(published * 1_000_000)  # the job's first publish
    if first is not None:
        if headers is not None:
            headers[events.ENQUEUED_HEADER] = first
        event["enqueued_at"] = events.micros_datetime(first)
    else:
        # A retry of a job published without the header (by a producer without Jobwatch, or before
        # it was installed): the writer finds the time its row already has.
        del event["enqueued_at"]
    if is_retry:
        # A retry republishes its own message before task_retry fires: record it as the end of
        # the attempt that failed (its error arrives next), not as a new enqueue with an origin.
        # A job put back to wait for an open circuit republishes the same way, with one more wait.
        waiting = fields["waits"] > events.as_count(getattr(running.request, events.WAITS_HEADER, 0))
        event["state"] = "waiting" if waiting else "retried"
        event["progress"] = events.progress(events.attempt_of(fields["retries"], fields["waits"]) - 1, "retried")
        if waiting:
            event["circuit"] = fields["circuit"]
    else:
        event.update(origin.origin_for_publish(sys._getframe(1)))
        if not event.get("origin_entry") and headers and isinstance(headers.get(PERIODIC_TASK_HEADER), str):
            # django-celery-beat names its entry in the message, should the frames not show it;
            # so does an operator's Run now (monitors/actions/periodic.py), which says so.
            event["origin_entry"] = headers[PERIODIC_TASK_HEADER][:200]
            event["origin_kind"] = "manual" if headers.get(MANUAL_RUN_HEADER) else (event.get("origin_kind") or "beat")
        if running is not None and getattr(running, "name", None):
            event["origin_task"] = running.name
            event["origin_kind"] = event.get("origin_kind") or "task"
        if not event.get("origin_kind"):
            event["origin_kind"] = "request" if event.get("origin_request") else "other"
        if event.get("origin_deferred"):
            event["origin_committed_at"] = published_at  # deferred jobs publish after the commit
        task = _registered_task(fields["task_name"])
        event["references"] = resolve_references(fields["task_name"], task, fields["args"], fields["kwargs"])
        events.counted(event, "sent", HOSTNAME, event["queue"])
    _publishing.event = event


def _registered_task(name):
    return current_app.tasks.get(name)


@guarded
def after_task_publish(sender=None, headers=None, body=None, **extra):
    event = getattr(_publishing, "event", None)
    _publishing.event = None
    if event is None:
        return
    alias = event.pop("_connection_alias", None)
    submit(event)
    if alias and event.get("origin_in_atomic") and not event.get("origin_deferred"):
        _note_commit(alias, event["task_id"], event["task_name"], event.get("enqueued_at"))


def _note_commit(alias, task_id, task_name, enqueued_at):
    """Record when the transaction that enqueued this job commits. A rolled-back transaction
    never calls back, which is how the orphan detector tells "rolled back" from "deleted"."""

    def committed():
        moment = events.now()
        submit({"task_id": task_id, "task_name": task_name, "state": "enqueued", "progress": 0,
                "origin_committed_at": moment, "updated_at": moment,
                **({"enqueued_at": enqueued_at} if enqueued_at else {})})

    origin._original_on_commit(connections[alias], committed, robust=True)


@guarded
def task_received(sender=None, request=None, **extra):
    # The worker's main process consumes for every pool process, so it writes nothing for a job
    # that starts at once: the receive time travels in the request to the pool process, whose
    # "started" event carries it. A job that will wait inside the worker for its eta is recorded
    # as received now, since it may wait a long time.
    request.request_dict[events.RECEIVED_KEY] = time.time()
    attempt = _attempt_of(request)
    if attempt:
        if len(_received_attempts) >= RECEIVED_ATTEMPTS_KEPT:
            _received_attempts.pop(next(iter(_received_attempts)))
        _received_attempts[request.id] = attempt
    if request.eta:
        submit(events.received_event(request))


@guarded
def task_prerun(sender=None, task_id=None, task=None, args=None, kwargs=None, **extra):
    _started[task_id] = time.monotonic()
    event = events.started_event(task_id, task, args, kwargs)
    wait = events.queue_wait(task.request, event["started_at"].timestamp())
    submit(events.counted(event, "started", event["worker"], event["queue"], seconds=wait))


@guarded
def task_failure(sender=None, task_id=None, exception=None, einfo=None, traceback=None, **extra):
    if task_id in _started:
        # task_postrun in this process writes the final event. Celery hands this signal a
        # picklable stand-in of the error (urllib's HTTPError arrives as a bare OSError); the
        # error itself is the one being handled, and its frames are alive until we return.
        original = original_exception(exception, traceback)
        failure = events.failure_fields(original, einfo)
        if original is not exception:
            failure["traceback"] = events.own_traceback(original) or failure["traceback"]
        failure.update(events.target_fields(original, traceback))
        _failures[task_id] = (failure, id(original))  # not the error itself: it holds its frames
        return
    # Sent by the worker's main process: a hard time limit or a pool process that died.
    failure = events.failure_fields(exception, einfo)
    attempt = _received_attempts.pop(task_id, 0)
    event = events.lost_event(task_id, getattr(sender, "name", ""), attempt, "failed", failure["exception_message"],
                              exception, einfo)  # the signal has no message: the writer finds the job's row
    submit(events.counted(event, "failed", HOSTNAME, exception=type(exception).__name__))


def original_exception(exception, traceback):
    """The error the task raised, when Celery is handling it now (the stand-in shares its
    traceback); otherwise the exception the signal carries."""
    handled = sys.exc_info()[1]
    if handled is None or handled is exception:
        return exception
    raised_through = traceback if traceback is not None else getattr(exception, "__traceback__", None)
    if raised_through is not None and handled.__traceback__ is raised_through:
        return handled
    return exception


@guarded
def task_retry(sender=None, request=None, reason=None, einfo=None, **extra):
    task_id = getattr(request, "id", None)
    if not task_id:
        return
    # `reason` is Celery's Retry; the error that caused it is its .exc, when there is one.
    cause = getattr(reason, "exc", None)
    if type(cause).__name__ == "CircuitOpenError" and getattr(cause, "name", None):
        # Not a failure: the job was put back to wait for its service's circuit.
        _waiting[task_id] = cause.name
        return
    failure = events.failure_fields(cause or reason, einfo)
    # The cause's own frames when it was raised; the Retry's (the task's) when it was only made.
    failure.update(events.target_fields(cause or reason, getattr(reason, "__traceback__", None)))
    _failures[task_id] = (failure, id(cause or reason))


@guarded
def task_postrun(sender=None, task_id=None, task=None, retval=None, state=None, args=None, kwargs=None, **extra):
    started = _started.pop(task_id, None)
    failure, failed_with = _failures.pop(task_id, (None, None))
    if failure is not None and state == "FAILURE" and isinstance(retval, BaseException) and id(retval) != failed_with:
        # task_failure could not tell the error from Celery's stand-in; the return value is it.
        failure = events.original_failure(failure, retval)
    waiting_on = _waiting.pop(task_id, None)
    final = events.POSTRUN_STATES.get(state, "failed" if failure else "succeeded")
    if waiting_on and final == "retried":
        final = "waiting"
    event = events.finished_event(task_id, task, final, started, retval if final == "succeeded" else None, failure)
    if waiting_on:
        event["circuit"] = waiting_on
    delivery = task.request.delivery_info or {}
    events.counted(event, events.FINAL_METRIC.get(final, final), event.get("worker"), delivery.get("routing_key"),
                   (failure or {}).get("exception_type", "").rsplit(".", 1)[-1] if final == "failed" else "",
                   event.get("runtime") if final in ("succeeded", "failed") else None)
    if final in ("failed", "retried") and setting("KEEP_FAILED_PAYLOADS"):
        payload = events.full_payload(args, kwargs)
        if payload is not None:
            event[events.PAYLOAD_KEY] = payload
    submit(event)


@guarded
def task_revoked(sender=None, request=None, terminated=None, signum=None, expired=None, **extra):
    if expired:
        reason = "expired before it ran"
    elif terminated:
        reason = f"terminated by signal {signum}"
    else:
        reason = "revoked"
    # Celery hands over a Request, or for a job terminated while it ran a task Context, which has
    # no `name`: the sender (the task) has it.
    name = getattr(request, "name", None) or getattr(sender, "name", None) or getattr(request, "task", "") or ""
    event = events.lost_event(request.id, name, _attempt_of(request), "revoked", reason, message=request)
    submit(events.counted(event, "revoked", HOSTNAME))


@guarded
def task_rejected(sender=None, message=None, exc=None, **extra):
    headers = getattr(message, "headers", None) or {}
    task_id = headers.get("id")
    if task_id:
        reason = f"rejected by the worker: {exc!r}" if exc else "rejected by the worker"
        event = events.lost_event(task_id, headers.get("task"), _header_attempt(headers), "rejected", reason,
                                  message=headers)
        submit(events.counted(event, "rejected", HOSTNAME))


@guarded
def task_unknown(sender=None, name=None, id=None, message=None, exc=None, **extra):
    """A message for a task the worker does not have (a deploy that renamed it, a worker on old
    code, a typo in send_task). Celery drops it and marks it failed with NotRegistered; so does
    Jobwatch: a failure, counted and grouped under NotRegistered, not a quiet "rejected"."""
    if id:
        headers = getattr(message, "headers", None) or {}
        queue = (getattr(message, "delivery_info", None) or {}).get("routing_key") or ""
        worker = getattr(sender, "hostname", "") or HOSTNAME
        error = NotRegistered(name)
        event = events.lost_event(id, name, _header_attempt(headers), "failed", "", error, message=headers)
        # The type says what happened; the message says where (NotRegistered's own is the bare name).
        event.update(worker=worker, queue=queue,
                     exception_message=f"the worker {worker} has no task named {name!r}: the message was dropped")
        submit(events.counted(event, "failed", worker, queue, exception=type(error).__name__))


def _attempt_of(request):
    request_dict = getattr(request, "request_dict", None) or {}
    return _header_attempt(request_dict)


def _header_attempt(headers):
    return events.attempt_of(headers.get("retries"), headers.get(events.WAITS_HEADER))


@guarded
def worker_after_setup(sender=None, instance=None, **extra):
    """Name the worker in this process's recorder row: its node name and the queues it consumes
    (set before the pool forks, so pool processes carry them too)."""
    WORKER["node"] = str(sender or "")[:255]
    consumed = getattr(getattr(instance.app.amqp, "queues", None), "consume_from", None) or {}
    WORKER["queues"] = sorted(consumed)


@guarded
def worker_ready(sender=None, **extra):
    get_writer().start_heartbeat()


def flush_at_shutdown(**extra):
    if _writer is not None:
        _writer.shutdown()


CELERY_HANDLERS = {
    celery_signals.before_task_publish: before_task_publish,
    celery_signals.after_task_publish: after_task_publish,
    celery_signals.task_received: task_received,
    celery_signals.task_prerun: task_prerun,
    celery_signals.task_failure: task_failure,
    celery_signals.task_retry: task_retry,
    celery_signals.task_postrun: task_postrun,
    celery_signals.task_revoked: task_revoked,
    celery_signals.task_rejected: task_rejected,
    celery_signals.task_unknown: task_unknown,
    celery_signals.celeryd_after_setup: worker_after_setup,
    celery_signals.worker_ready: worker_ready,
    celery_signals.worker_process_shutdown: flush_at_shutdown,
    celery_signals.worker_shutdown: flush_at_shutdown,
}


def connect():
    """Connect every handler once (safe to call from AppConfig.ready and the Celery app)."""
    for signal, handler in CELERY_HANDLERS.items():
        signal.connect(handler, weak=False, dispatch_uid=f"jobwatch.{handler.__name__}")
    django_signals.request_started.connect(origin.request_started, dispatch_uid="jobwatch.request_started")
    django_signals.request_finished.connect(origin.request_finished, dispatch_uid="jobwatch.request_finished")
    origin.install()
    global _exit_flush_registered
    if not _exit_flush_registered:
        register_exit_flush()
        _exit_flush_registered = True


def register_exit_flush():
    """Flush when the interpreter exits (scripts, web servers). threading's own exit hooks run
    while new threads may still start, which psycopg's pool needs to connect; plain atexit
    hooks run too late for that."""
    register = getattr(threading, "_register_atexit", None)
    try:
        if register is None:
            raise RuntimeError
        register(flush_at_shutdown)
    except RuntimeError:
        atexit.register(flush_at_shutdown)
