"""The only code that changes anything: every surface (dashboard, admin, management commands)
calls these functions, which check the permission, write the audit log (ActionLog), and then act.

Every call is audited, allowed or not: a refusal is logged as refused and raised as
ActionRefused (a PermissionDenied, so views answer 403).
"""

import contextlib
import logging

from django.core.exceptions import PermissionDenied
from django.utils import timezone

from monitors.models import ActionLog

logger = logging.getLogger("monitors.actions")

# Action → the Django permission it needs.
PERMISSIONS = {
    "force_circuit": "monitors.force_circuit",
}
SURFACES = ("dashboard", "admin", "command", "api")


class ActionRefused(PermissionDenied):
    """The user lacks the permission for this action (the refusal is in the audit log)."""


def allowed(user, action):
    return bool(user and user.is_active and user.is_staff and user.has_perm(PERMISSIONS[action]))


@contextlib.contextmanager
def audited(user, action, target, parameters, surface, dry_run=False):
    """Check the permission and log the action around its work. The body fills in `matched`,
    `succeeded` and `failed` on the yielded ActionLog; an exception marks it failed (and is
    re-raised), otherwise it ends succeeded, or previewed for a dry run."""
    if surface not in SURFACES:
        raise ValueError(f"unknown surface {surface!r}")
    log = ActionLog(
        at=timezone.now(), user=user if getattr(user, "pk", None) else None, username=getattr(user, "username", "") or "",
        surface=surface, action=action, target=str(target)[:400], parameters=parameters, dry_run=dry_run,
        outcome=ActionLog.Outcome.RUNNING,
    )
    if not allowed(user, action):
        log.outcome = ActionLog.Outcome.REFUSED
        log.finished_at = log.at
        log.error = f"{log.username or 'anonymous'} lacks the permission {PERMISSIONS[action]}"
        log.save()
        raise ActionRefused(log.error)
    log.save()
    try:
        yield log
    except Exception as error:
        log.outcome = ActionLog.Outcome.FAILED
        log.error = f"{type(error).__name__}: {error}"[:5000]
        log.finished_at = timezone.now()
        log.save()
        raise
    log.outcome = ActionLog.Outcome.PREVIEWED if dry_run else ActionLog.Outcome.SUCCEEDED
    log.finished_at = timezone.now()
    log.save()


# -- circuits ------------------------------------------------------------------------------------

CIRCUIT_CHANGES = {"open": "forced_open", "close": "forced_closed", "reset": "closed"}


def force_circuit(user, name, change, *, reason="", surface="dashboard", dry_run=False):
    """Force circuit `name` open ("open": no job calls the service, jobs wait), closed ("close":
    every call goes through whatever fails), or "reset" it (closed, counters cleared, the breaker
    decides again). Returns the circuit's state after the change (before it, for a dry run)."""
    from monitors.circuits import shared_store
    from monitors.circuits.machine import force
    from monitors.detectors.circuits import policy_of, state_of
    from monitors.models import Circuit

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
