"""A circuit as the operator sees it, read in one place for the pages, the detector, the actions,
/metrics and the command: its state (from the shared store, else the database's copy of it), its
policy, since when it has been open, and the jobs waiting for it to close.

Needs Django's models: import it from code that runs with the apps ready, not from the breaker
(monitors/circuits/__init__.py, which task modules import early, does not import it).
"""

from django.db.models import Count, Min

from monitors.circuits.machine import FORCED_OPEN, HALF_OPEN, OPEN, Policy, State
from monitors.circuits.stores import shared_store
from monitors.circuits.stores import StoreUnavailable
from monitors.models import CircuitEvent, JobExecution

OPEN_STATES = (OPEN, HALF_OPEN, FORCED_OPEN)
FALLBACK = "database copy (the shared store is unreachable)"


def current_state(row, store=None):
    """(state, where it was read) of a Circuit row: the shared store's, which every worker writes;
    the database's copy when the store does not answer (it may be a few seconds behind)."""
    store = store or shared_store()
    try:
        return store.read(row.name) or state_of(row), store.kind
    except StoreUnavailable:
        return state_of(row), FALLBACK


def state_of(row):
    """The state as the database's copy (the Circuit row) last recorded it."""
    return State(**{name: getattr(row, name) for name in State.names()})


def policy_of(row):
    """The breaker's options as its process registered them; defaults for a row it cannot read."""
    known = set(Policy.names())
    try:
        return Policy(**{key: value for key, value in (row.policy or {}).items() if key in known})
    except ValueError:
        return Policy()


def open_since(name, state):
    """When this outage began: the first opening after the circuit was last closed (a failed trial
    re-opens it and restarts the cool-down, but the outage goes on)."""
    last_closed = (
        CircuitEvent.objects.filter(circuit=name, to_state__in=("closed", "forced_closed"))
        .order_by("-at").values_list("at", flat=True).first()
    )
    openings = CircuitEvent.objects.filter(circuit=name, to_state__in=OPEN_STATES)
    if last_closed is not None:
        openings = openings.filter(at__gt=last_closed)
    first = openings.order_by("at").values_list("at", flat=True).first()
    return first or state.opened_at or state.changed_at


def jobs_waiting(name):
    """{count, oldest (ISO time), queues: {queue: jobs}, tasks: {task: jobs}} of the jobs waiting
    for the circuit (the execution table's partial index of waiting jobs)."""
    return jobs_waiting_by_circuit([name])[name]


def jobs_waiting_by_circuit(names, shown=20):
    """jobs_waiting() of several circuits in one query, grouped by circuit, queue and task: a page of
    circuits pays for one plan over the job history rather than three per circuit. The `shown`
    busiest queues and tasks of each, most jobs first."""
    summaries = {name: {"count": 0, "oldest": None, "queues": {}, "tasks": {}} for name in names}
    groups = (JobExecution.objects.filter(state="waiting", circuit__in=list(names))
              .values_list("circuit", "queue", "task_name").annotate(jobs=Count("id"), oldest=Min("enqueued_at")).order_by())
    for circuit, queue, task_name, jobs, oldest in groups:
        summary = summaries[circuit]
        summary["count"] += jobs
        if oldest is not None and (summary["oldest"] is None or oldest < summary["oldest"]):
            summary["oldest"] = oldest
        summary["queues"][queue] = summary["queues"].get(queue, 0) + jobs
        summary["tasks"][task_name] = summary["tasks"].get(task_name, 0) + jobs
    for summary in summaries.values():
        for part in ("queues", "tasks"):
            busiest = sorted(summary[part].items(), key=lambda item: (-item[1], item[0]))[:shown]
            summary[part] = dict(busiest)
        summary["oldest"] = summary["oldest"].isoformat() if summary["oldest"] else None
    return summaries
