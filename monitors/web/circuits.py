"""Circuits: one tile per service, in the spirit of the Hystrix dashboard — state, error rate
and volume over the breaker's window, how long it has been open and the cool-down left, the jobs
waiting behind it — with force open / force closed / reset (previewed, permission-checked and
audited by monitors/actions/)."""

from django.utils import timezone
from django.utils.dateparse import parse_datetime

from monitors.circuits.machine import OPEN
from monitors.circuits.stores import shared_store
from monitors.circuits.status import OPEN_STATES, current_state, jobs_waiting_by_circuit, open_since, policy_of
from monitors.models import Circuit, CircuitEvent, CircuitState
from monitors.web.access import staff_only
from monitors.web.respond import respond

EVENTS_SHOWN = 8
CHANGES = [("open", "Force open"), ("close", "Force closed"), ("reset", "Reset")]


@staff_only
def circuit_list(request):
    store, now = shared_store(), timezone.now()
    circuits = list(Circuit.objects.order_by("name"))
    waiting = jobs_waiting_by_circuit([row.name for row in circuits])
    tiles = []
    for row in circuits:
        state, source = current_state(row, store)
        tiles.append(tile(row, state, policy_of(row), now, source, waiting[row.name]))
    return respond(request, "jobwatch/circuits.html", {"tiles": tiles, "circuit_changes": CHANGES}, fragments=["circuit-tiles"], api=["tiles"])


def waiting_of(waiting):
    return {**waiting, "oldest": parse_datetime(waiting["oldest"]) if waiting["oldest"] else None}


def tile(row, state, policy, now, source, waiting):
    calls, failures = state.window_counts(policy, now)
    is_open = state.state in OPEN_STATES
    return {
        "name": row.name,
        "state": state.state,
        "state_label": CircuitState(state.state).label if state.state in CircuitState.values else state.state,
        "source": source,
        "calls": calls,
        "failures": failures,
        "error_rate": round(100 * failures / calls, 1) if calls else None,
        "window_seconds": policy.window,
        "consecutive_failures": state.consecutive_failures,
        "fail_max": policy.fail_max,
        "open_since": open_since(row.name, state) if is_open else None,
        "cool_down_left": state.cool_down_left(policy, now) if state.state == OPEN else None,
        "trials": len(state.trials),
        "trial_calls": policy.trial_calls,
        "open_count": state.open_count,
        "last_error": f"{state.last_error_type}: {state.last_error}" if state.last_error_type else state.last_error,
        "last_failure_at": state.last_failure_at,
        "last_success_at": state.last_success_at,
        "forced_by": state.forced_by,
        "waiting": waiting_of(waiting),
        "events": list(CircuitEvent.objects.filter(circuit=row.name).order_by("-at")[:EVENTS_SHOWN]),
    }
