"""Acknowledging and snoozing incidents (each one checked and audited on its own)."""

from monitors.actions.gate import ActionRefused, ActionResult, audited
from monitors.alerts.incidents import acknowledge, snooze
from monitors.models import Incident


def acknowledge_incident(user, incident_id, *, snooze_seconds=None, surface="dashboard"):
    """Acknowledge an open incident (no more repeats; its resolve is still notified), or with
    `snooze_seconds` silence its repeats for that long."""
    parameters = {"incident": int(incident_id), "snooze_seconds": snooze_seconds}
    action = "acknowledge_incident"
    with audited(user, action, f"incident {incident_id}", parameters, surface) as log:
        incident = Incident.objects.get(pk=incident_id)
        log.matched = 1
        if snooze_seconds:
            snooze(incident, int(snooze_seconds))
        else:
            acknowledge(incident, log.username)
        log.succeeded = 1
        return ActionResult(log, 1)


def acknowledge_incidents(user, incident_ids, *, snooze_seconds=None, surface="dashboard"):
    """Acknowledge (or snooze) several incidents at once, each checked and audited on its own as
    acknowledge_incident does. The allowed ones are done; then, if any was refused, ActionRefused
    says how many and which permission is missing."""
    ids = list(dict.fromkeys(int(incident_id) for incident_id in incident_ids))
    results, refused = [], []
    for incident_id in ids:
        try:
            results.append(acknowledge_incident(user, incident_id, snooze_seconds=snooze_seconds, surface=surface))
        except ActionRefused as refusal:
            refused.append(refusal)
    if refused:
        raise ActionRefused(f"{len(refused)} of {len(ids)} incidents refused: {refused[0]}", permission=refused[0].permission)
    return results
