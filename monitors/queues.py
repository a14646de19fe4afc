"""The queue table: every queue, how deep, how old its oldest job, who consumes it, and whether
it is draining.

Queues are discovered from three places, so a queue nobody consumes any more still shows up:
the broker itself, the Celery app's routing configuration, and the jobs recorded recently.
Live reads (`snapshot`) are for the sampler and the command line; pages read samples.
"""

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from celery import current_app
from django.db.models import Min
from django.utils import timezone

from monitors.brokers import BrokerUnavailable, open_broker
from monitors.models import JobExecution

RATE_WINDOW = timedelta(minutes=1)


@dataclass
class QueueRow:
    name: str
    depth: int | None = None
    depth_by_priority: dict = field(default_factory=dict)
    in_flight: int | None = None
    scheduled: int | None = None
    consumers: int | None = None
    workers: list | None = None
    oldest_age: float | None = None
    oldest_from: str = ""  # "message" (its publish header) or "history" (the execution table)
    arrivals_per_minute: float | None = None
    drains_per_minute: float | None = None
    exists_on_broker: bool = True
    found_in: list = field(default_factory=list)
    note: str = ""
    error: str = ""
    sampled_at: datetime | None = None
    # The operator's pause (a QueuePause), set by monitors.pausing.mark_paused: its jobs wait on
    # purpose, so "no consumer" and "growing" are not trouble.
    pause: object = None

    @property
    def time_to_drain(self):
        return time_to_drain(self.depth, self.arrivals_per_minute, self.drains_per_minute)

    @property
    def trend(self):
        return trend(self.depth, self.arrivals_per_minute, self.drains_per_minute)

    @property
    def troubles(self):
        """What an operator should look at, in words (empty: nothing)."""
        found = []
        if self.error:
            found.append("broker unavailable")
        if self.pause is not None:
            return found
        if self.depth and self.consumers == 0:
            found.append("no consumer")
        if self.depth and self.trend in ("growing", "stalled"):
            found.append(self.trend)
        return found

    @property
    def trouble(self):
        return bool(self.troubles)

    def as_dict(self):
        data = {name: getattr(self, name) for name in self.__dataclass_fields__}
        data["sampled_at"] = self.sampled_at.isoformat() if self.sampled_at else None
        data["time_to_drain"] = self.time_to_drain
        data["trend"] = self.trend
        data["troubles"] = self.troubles
        data["pause"] = ({"paused_by": self.pause.paused_by, "paused_at": self.pause.paused_at.isoformat(),
                          "reason": self.pause.reason} if self.pause is not None else None)
        return data


def time_to_drain(depth, arrivals, drains):
    """Seconds until the queue is empty at the current rates; None when it is not draining."""
    if not depth:
        return 0.0
    if arrivals is None or drains is None:
        return None
    net = drains - arrivals
    return depth / net * 60 if net > 0 else None


def trend(depth, arrivals, drains):
    if arrivals is None or drains is None:
        return "unknown"
    if not depth and not arrivals:
        return "idle"
    if drains > arrivals:
        return "draining"
    if arrivals > drains:
        return "growing"
    return "stalled" if depth and not drains else "steady"


def configured_queues(app):
    """Queue names the Celery app routes to: its queues, its default, its static routes."""
    conf = app.conf
    names = {conf.task_default_queue or "celery"}
    for queue in conf.task_queues or ():
        names.add(getattr(queue, "name", None) or (queue.get("name") if isinstance(queue, dict) else str(queue)))
    routes = conf.task_routes or {}
    for route in routes.values() if isinstance(routes, dict) else ():
        if isinstance(route, dict) and route.get("queue"):
            queue = route["queue"]
            names.add(getattr(queue, "name", queue))
        elif isinstance(route, str):
            names.add(route)
    return {name for name in names if name}


def recent_job_queues(since):
    return set(
        JobExecution.objects.filter(enqueued_at__gte=since).exclude(queue="").values_list("queue", flat=True).distinct()
    )


def discover(broker, app, history_since):
    """{queue: [where it was found]}."""
    found = {}
    for source, names in (
        ("broker", broker.queue_names() if broker else set()),
        ("routes", configured_queues(app)),
        ("history", recent_job_queues(history_since)),
    ):
        for name in names:
            found.setdefault(name, []).append(source)
    return found


def rates(queue, now):
    """(arrivals, drains) per minute over the last minute, from the execution table."""
    since = now - RATE_WINDOW
    arrivals = JobExecution.objects.filter(queue=queue, enqueued_at__gte=since).count()
    drains = JobExecution.objects.filter(finished_at__gte=since, queue=queue).count()
    minutes = RATE_WINDOW.total_seconds() / 60
    return arrivals / minutes, drains / minutes


def oldest_recorded_wait(queue):
    """When the oldest job still recorded as enqueued on `queue` was enqueued."""
    return JobExecution.objects.filter(queue=queue, state="enqueued").aggregate(oldest=Min("enqueued_at"))["oldest"]


def consuming_workers(app, timeout=1.0):
    """{queue: [worker hostnames]} from the workers themselves; None when none answered."""
    try:
        replies = app.control.inspect(timeout=timeout).active_queues() or {}
    except Exception:
        return None
    consumers = {}
    for worker, queues in replies.items():
        for queue in queues or ():
            consumers.setdefault(queue.get("name"), []).append(worker)
    return consumers if replies else None


def snapshot(app=None, ask_workers=True, history=timedelta(hours=1)):
    """The queue table, read live from the broker now. Never raises for a broker that is down:
    each row then carries the error and what the execution table knows."""
    app = app or current_app
    now = timezone.now()
    error, broker, stats = "", None, {}
    try:
        broker = open_broker(app)
    except BrokerUnavailable as problem:
        error = str(problem)
    try:
        names = discover(broker, app, now - history)
        if broker is not None:
            stats = broker.stats(sorted(names))
    except BrokerUnavailable as problem:
        error, names = str(problem), discover(None, app, now - history)
    finally:
        if broker is not None:
            broker.close()
    workers = consuming_workers(app) if ask_workers and not error else None
    rows = []
    for name, sources in sorted(names.items()):
        row = QueueRow(name=name, found_in=sources, error=error, sampled_at=now)
        queue_stats = stats.get(name)
        if queue_stats is not None:
            row.depth = queue_stats.depth
            row.depth_by_priority = queue_stats.depth_by_priority
            row.in_flight = queue_stats.in_flight
            row.scheduled = queue_stats.scheduled
            row.consumers = queue_stats.consumers
            row.exists_on_broker = queue_stats.exists_on_broker
            row.note = queue_stats.note
            if queue_stats.oldest_published_at:
                # At least 0: `now` is taken before the broker is read, and a message may be newer.
                row.oldest_age, row.oldest_from = max((now - queue_stats.oldest_published_at).total_seconds(), 0.0), "message"
        if row.oldest_age is None and (row.depth or row.depth is None):
            oldest = oldest_recorded_wait(name)
            if oldest:
                row.oldest_age, row.oldest_from = max((now - oldest).total_seconds(), 0.0), "history"
        if workers is not None:
            row.workers = sorted(workers.get(name, []))
            if row.consumers is None:
                row.consumers = len(row.workers)
        row.arrivals_per_minute, row.drains_per_minute = rates(name, now)
        rows.append(row)
    return rows
