"""What caused an enqueue: the model save in progress, the receiver that called `delay`, the
transaction it ran in, and the request or task around it.

Saves cost nothing extra: instead of hooking every save, the publisher walks its own stack once
per enqueue. Django's `Signal.send` keeps the signal, the sender, the receiver being called and
the save's arguments (instance, created, update_fields) in its frame, so the innermost such frame
names both the save and the receiver. A job deferred with `transaction.on_commit` (or Celery's
`delay_on_commit`) is published after the commit, when that stack is gone, so the origin is
captured when the callback is registered and carried to the publish in a context variable.

Two small wrappers make that possible, installed once by `install()`:
- `BaseDatabaseWrapper.on_commit`, the one path every on_commit takes, captures the origin;
- `Atomic.__enter__` gives each outermost transaction an id, which groups the jobs one
  transaction enqueued (bulk loops) and tells the orphan detector which transaction to ask about.
"""

import collections
import contextvars
import functools
import os
import sys
import threading
import uuid

from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Model
from django.db.models import signals as model_signals
from django.db.transaction import Atomic
from django.dispatch.dispatcher import Signal

current_request = contextvars.ContextVar("jobwatch_request", default=None)
deferred_origin = contextvars.ContextVar("jobwatch_deferred_origin", default=None)

SIGNAL_SEND_CODES = {Signal.send.__code__, Signal.send_robust.__code__}
SAVE_SIGNALS = {model_signals.pre_save, model_signals.post_save}
DELETE_SIGNALS = {model_signals.pre_delete, model_signals.post_delete}
MODEL_METHODS = {"save", "save_base", "delete"}

# Frames in these folders are machinery between the user's call and our signal handler; the
# first frame outside them is "the function that enqueued".
_MACHINERY = tuple(
    os.path.dirname(path) + os.sep
    for path in (
        __import__("celery").__file__,
        __import__("kombu").__file__,
        __import__("amqp").__file__,
        __import__("billiard").__file__,
        __import__("vine").__file__,
        os.path.dirname(__file__) + "/x",
        os.path.dirname(Signal.send.__code__.co_filename) + "/x",
        os.path.dirname(BaseDatabaseWrapper.on_commit.__code__.co_filename) + "/x",
        os.path.dirname(Atomic.__enter__.__code__.co_filename) + "/x",
        functools.__file__,
    )
) + ("<frozen ",)
_BEAT_FILE = os.path.join(os.path.dirname(__import__("celery").__file__), "beat.py")

# What a frame's code is to `capture`, worked out once per code object: the walk runs on every
# enqueue over the whole stack (a web request's is dozens of frames deep). Keyed by id() with the
# code kept alongside, because hashing a code object hashes its constants, every time.
SIGNAL_SEND, MODEL_METHOD, MACHINERY, BEAT = 1, 2, 4, 8
_code_kinds = {}


def code_kind(code):
    known = _code_kinds.get(id(code))
    if known is not None and known[0] is code:
        return known[1]
    kind = ((SIGNAL_SEND if code in SIGNAL_SEND_CODES else 0)
            | (MODEL_METHOD if code.co_name in MODEL_METHODS else 0)
            | (MACHINERY if code.co_filename.startswith(_MACHINERY) else 0)
            | (BEAT if code.co_filename == _BEAT_FILE else 0))
    _code_kinds[id(code)] = (code, kind)
    return kind


def dotted_name(obj):
    """module.qualname of a receiver or function, seeing through partials and bound methods."""
    while isinstance(obj, functools.partial):
        obj = obj.func
    obj = getattr(obj, "__func__", obj)
    module = getattr(obj, "__module__", None) or "?"
    name = getattr(obj, "__qualname__", None) or type(obj).__qualname__
    return f"{module}.{name}"


def code_name(frame):
    module = frame.f_globals.get("__name__", "?")
    return f"{module}.{frame.f_code.co_qualname}"


def model_label(model):
    meta = getattr(model, "_meta", None)
    return meta.label if meta is not None else ""


def pk_text(instance):
    pk = getattr(instance, "pk", None)
    return "" if pk is None else str(pk)


def capture(start_frame):
    """The origin seen from `start_frame` upwards, as a dict of JobExecution origin_* fields."""
    origin = {}
    caller = None
    model_frame = None
    beat = False
    frame = start_frame
    while frame is not None:
        kind = code_kind(frame.f_code)
        if not kind:
            if caller is None:
                caller = frame
            frame = frame.f_back
            continue
        if kind & SIGNAL_SEND:
            describe_signal(origin, frame.f_locals)
            break
        if kind & MODEL_METHOD and model_frame is None and isinstance(frame.f_locals.get("self"), Model):
            model_frame = frame
        if caller is None and not kind & MACHINERY:
            caller = frame
        if kind & BEAT:
            beat = True
            # Scheduler.apply_async(entry, …) — celery beat's own scheduler and those built on it
            # (django-celery-beat's DatabaseScheduler): the entry being sent, by its name.
            entry = frame.f_locals.get("entry")
            if entry is not None and isinstance(getattr(entry, "name", None), str):
                origin["origin_entry"] = entry.name[:200]
        frame = frame.f_back

    if not origin and model_frame is not None:
        # Enqueued from an overridden save()/delete() rather than a receiver.
        instance = model_frame.f_locals["self"]
        origin["origin_kind"] = "delete" if model_frame.f_code.co_name == "delete" else "save"
        origin["origin_model"] = model_label(instance)
        origin["origin_pk"] = pk_text(instance)
        fields = model_frame.f_locals.get("update_fields")
        origin["origin_update_fields"] = sorted(fields) if fields else None
    if caller is not None and not origin.get("origin_receiver"):
        origin["origin_receiver"] = code_name(caller)
    if not origin.get("origin_kind"):
        origin["origin_kind"] = "beat" if beat else ""
    add_transaction(origin)
    request = current_request.get()
    if request is not None:
        origin["origin_request"], origin["origin_request_id"] = request
    return origin


# The dispatch of one signal hands every receiver the same `named` dict; remembering the last few
# (with a reference, so that their id() cannot be reused meanwhile) gives each save one id that
# all its receivers' jobs share, deferred ones included.
_recent_dispatches = threading.local()
RECENT_DISPATCHES = 32


def dispatch_id(named):
    recent = getattr(_recent_dispatches, "entries", None)
    if recent is None:
        recent = _recent_dispatches.entries = collections.OrderedDict()
    entry = recent.get(id(named))
    if entry is not None and entry[0] is named:
        return entry[1]
    save_id = uuid.uuid4().hex
    recent[id(named)] = (named, save_id)
    if len(recent) > RECENT_DISPATCHES:
        recent.popitem(last=False)
    return save_id


def describe_signal(origin, send_locals):
    signal = send_locals.get("self")
    named = send_locals.get("named") or {}
    origin["origin_save"] = dispatch_id(named)
    sender = send_locals.get("sender")
    receiver = send_locals.get("receiver")
    instance = named.get("instance")
    if signal in SAVE_SIGNALS:
        origin["origin_kind"] = "save"
        origin["origin_created"] = named.get("created")
        fields = named.get("update_fields")
        origin["origin_update_fields"] = sorted(fields) if fields else None
    elif signal in DELETE_SIGNALS:
        origin["origin_kind"] = "delete"
    else:
        origin["origin_kind"] = "signal"
    if isinstance(instance, Model):
        origin["origin_model"] = model_label(instance)
        origin["origin_pk"] = pk_text(instance)
    elif isinstance(sender, type) and issubclass(sender, Model):
        origin["origin_model"] = model_label(sender)
    if receiver is not None:
        origin["origin_receiver"] = dotted_name(receiver)


def add_transaction(origin):
    for connection in connections.all(initialized_only=True):
        if connection.in_atomic_block:
            origin["origin_in_atomic"] = True
            origin["origin_transaction"] = getattr(connection, "jobwatch_transaction_id", "") or ""
            origin["_connection_alias"] = connection.alias
            return
    origin["origin_in_atomic"] = False


def origin_for_publish(start_frame):
    """The origin of the job being published now: captured at on_commit time if deferred."""
    deferred = deferred_origin.get()
    if deferred is not None:
        return dict(deferred)
    return capture(start_frame)


def deferral_kind(func):
    """delay_on_commit registers functools.partial(task.delay or task.apply_async, ...)."""
    if isinstance(func, functools.partial):
        target = func.func
        if getattr(target, "__name__", "") in ("delay", "apply_async") and hasattr(getattr(target, "__self__", None), "apply_async"):
            return "delay_on_commit"
    return "on_commit"


def run_with_origin(func, origin):
    @functools.wraps(func)
    def deferred_call():
        token = deferred_origin.set(origin)
        try:
            return func()
        finally:
            deferred_origin.reset(token)

    return deferred_call


_installed = False
_original_on_commit = BaseDatabaseWrapper.on_commit
_original_atomic_enter = Atomic.__enter__


def on_commit_with_origin(self, func, robust=False):
    try:
        origin = capture(sys._getframe(1))
        origin["origin_deferred"] = deferral_kind(func)
        origin.pop("_connection_alias", None)
        func = run_with_origin(func, origin)
    except Exception:  # never let recording break the user's transaction
        pass
    return _original_on_commit(self, func, robust)


def atomic_enter_with_id(self):
    connection = connections[self.using or "default"]
    outermost = not connection.in_atomic_block
    result = _original_atomic_enter(self)
    if outermost:
        connection.jobwatch_transaction_id = uuid.uuid4().hex
    return result


def install():
    global _installed
    if _installed:
        return
    BaseDatabaseWrapper.on_commit = on_commit_with_origin
    Atomic.__enter__ = atomic_enter_with_id
    _installed = True


def request_started(sender, environ=None, scope=None, **kwargs):
    if environ is not None:
        method, path = environ.get("REQUEST_METHOD", ""), environ.get("PATH_INFO", "")
    elif scope is not None:
        method, path = scope.get("method", ""), scope.get("path", "")
    else:
        return
    current_request.set((f"{method} {path}"[:300], uuid.uuid4().hex))


def request_finished(sender, **kwargs):
    current_request.set(None)
