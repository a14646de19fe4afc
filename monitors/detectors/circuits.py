"""Circuits: services whose circuit is open (or keeps opening), with the jobs piling up behind
them. Services failing with no breaker at all are the services detector's (services.py).

The breaker's state is read from its shared store (the database or Redis), the jobs waiting on
it from the execution table's partial index of waiting jobs, and its history from CircuitEvent.
"""

from datetime import timedelta

from monitors.circuits.machine import FORCED_OPEN, HALF_OPEN, OPEN
from monitors.circuits.stores import shared_store
from monitors.circuits.status import OPEN_STATES, current_state, jobs_waiting, open_since, policy_of
from monitors.detectors.base import Problem, short, threshold
from monitors.models import Circuit, CircuitEvent, JobExecution

NAME = "circuits"


def detect(now):
    return open_circuits(now)


# -- circuits that are open or flapping ----------------------------------------------------------


def open_circuits(now):
    store = shared_store()
    problems = []
    for row in Circuit.objects.order_by("name"):
        state, source = current_state(row, store)
        if state.state in OPEN_STATES:
            problems.append(open_circuit(row.name, state, policy_of(row), now, source))
        flapping = flapping_circuit(row.name, now)
        if flapping is not None:
            problems.append(flapping)
    return problems


def open_circuit(name, state, policy, now, source):
    since = open_since(name, state)
    open_for = (now - since).total_seconds() if since else 0.0
    waiting = jobs_waiting(name)
    retrying = JobExecution.objects.filter(circuit=name, state="retried").count()
    forced = state.state == FORCED_OPEN
    critical = open_for >= threshold("CIRCUIT_OPEN_CRITICAL_SECONDS")
    what = {OPEN: "open", HALF_OPEN: "half-open (trial calls running)", FORCED_OPEN: f"forced open by {state.forced_by}"}
    title = f"Circuit {name} is {what[state.state]}: {waiting['count']} jobs waiting"
    if forced:
        explanation = (
            f"An operator forced the circuit of {name} open: no job calls it, and its jobs wait on the circuit "
            "(they do not fail or use up retries). Close or reset it when the service is back; until then the "
            "waiting jobs keep piling up."
        )
    else:
        explanation = (
            f"Calls to {name} failed ({state.last_error_type or 'errors'}: {short(state.last_error)}), so the "
            f"breaker stopped calling it. Jobs that need it wait and retry after the cool-down "
            f"({policy.reset_timeout:g} s) without using up their retries; trial calls then test the service "
            "and close the circuit when they succeed. Check the service (or its credentials, quota, network); "
            "if it will be down for long, force the circuit open so that trials stop, and watch the queue behind it."
        )
    evidence = {
        "state": state.state,
        "open_since": since.isoformat() if since else None,
        "open_seconds": round(open_for, 1),
        "cool_down_left_seconds": round(state.cool_down_left(policy, now), 1),
        "opened_by": state.last_error_type,
        "last_error": short(state.last_error, 500),
        "consecutive_failures": state.consecutive_failures,
        "times_opened": state.open_count,
        "forced_by": state.forced_by,
        "jobs_waiting": waiting["count"],
        "oldest_waiting_since": waiting["oldest"],
        "waiting_by_queue": waiting["queues"],
        "waiting_by_task": waiting["tasks"],
        "jobs_retrying": retrying,
        "state_read_from": source,
    }
    # Work is not getting done when jobs wait behind the circuit (or it has been open for long);
    # an operator's forced opening is deliberate, and a circuit nobody waits on is a warning.
    severity = "critical" if not forced and (waiting["count"] or retrying or critical) else "warning"
    return Problem(
        kind="circuit_open", subject=name, severity=severity,
        title=title, explanation=explanation, evidence=evidence, count=waiting["count"] + retrying,
        fix=f"Check {name} (status, credentials, quota, network); force the circuit open if it stays down.",
        # The addresses its calls failed on: a call to the same service made without the breaker
        # (another task) is the same outage.
        keys=[f"service:{name}", *(f"service:{target}" for target in addresses_of(name, now))],
        links=[*(f"task:{task}" for task in waiting["tasks"]), *(f"queue:{queue}" for queue in waiting["queues"])],
    )


def addresses_of(name, now):
    """Where the circuit's recent failures went, as the recorder read it from their exceptions."""
    recent = JobExecution.objects.filter(circuit=name, finished_at__gt=now - timedelta(seconds=threshold("SERVICE_FAILURE_SECONDS")),
                                         finished_at__lte=now)
    return list(recent.exclude(error_target="").values_list("error_target", flat=True).distinct()[:5])


def flapping_circuit(name, now):
    span = threshold("CIRCUIT_FLAP_SECONDS")
    openings = list(
        CircuitEvent.objects.filter(circuit=name, from_state="closed", to_state=OPEN, at__gt=now - timedelta(seconds=span), at__lte=now)
        .order_by("at").values_list("at", flat=True)
    )
    if len(openings) < threshold("CIRCUIT_FLAP_COUNT"):
        return None
    return Problem(
        kind="circuit_flapping", subject=name, severity="warning",
        title=f"Circuit {name} opened {len(openings)} times in {span / 60:.0f} minutes",
        explanation=(
            f"{name} keeps failing, recovering and failing again. Each time, jobs fail until the breaker opens, "
            "then wait. The service is unstable (overloaded, a bad node behind a load balancer, a quota that "
            "resets), or the breaker closes too eagerly: more trial calls or a longer cool-down keep it open "
            "until the service is really back."
        ),
        evidence={"openings": [moment.isoformat() for moment in openings]},
        count=len(openings),
        fix=f"Find why {name} recovers and fails again; or give the breaker more trial calls or a longer cool-down.",
        keys=[f"service:{name}"],
    )
