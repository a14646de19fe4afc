"""Forcing a circuit open or closed, or resetting it, by hand: the change goes through the shared
store like the breaker's own, so every process sees it at once, and is a transition with the
operator's name and reason."""

import logging

from django.utils import timezone

from monitors.actions.gate import audited
from monitors.circuits.machine import force
from monitors.circuits.stores import shared_store
from monitors.circuits.status import policy_of, state_of
from monitors.models import Circuit

logger = logging.getLogger("monitors.actions")

CIRCUIT_CHANGES = {"open": "forced_open", "close": "forced_closed", "reset": "closed"}


def force_circuit(user, name, change, *, reason="", surface="dashboard", dry_run=False):
    """Force circuit `name` open ("open": no job calls the service, jobs wait), closed ("close":
    every call goes through whatever fails), or "reset" it (closed, counters cleared, the breaker
    decides again). Returns the circuit's state after the change (before it, for a dry run)."""
    if change not in CIRCUIT_CHANGES:
        raise ValueError(f"a circuit can be forced open, forced closed or reset, not {change!r}")
    parameters = {"change": change, "reason": reason}
    with audited(user, "force_circuit", name, parameters, surface, dry_run) as log:
        row = Circuit.objects.filter(name=name).first()
        if row is None:
            raise LookupError(f"no circuit named {name!r}; circuits appear once a process has used them")
        store = shared_store()
        log.matched = 1
        if dry_run:
            return store.read(name) or state_of(row)
        policy = policy_of(row)
        actor = f"{log.username} ({surface})"
        now = timezone.now()
        _, transitions, state = store.update(
            name, policy, lambda current: (None, force(current, policy, now, CIRCUIT_CHANGES[change], actor, reason))
        )
        log.succeeded = 1
        logger.warning("Circuit %s: %s", name, transitions[0].cause)
        return state
