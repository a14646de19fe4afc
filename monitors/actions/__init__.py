"""Everything that changes anything. Every surface (dashboard, admin, management commands, the API)
calls these verbs, and each goes through the gate (gate.py): the permission check, the audit log
entry (allowed or refused), dry runs, the size cap and the hand-off of large sets to a worker.

    selection.py   which jobs an action applies to (one filter, one set of jobs, pinned when made)
    replay.py      send recorded jobs again under new ids, refusing what would not be the same job
    purge.py       take messages off a queue, archived first; restore them
    discard.py     hide failed jobs from the history (and bring them back)
    cancel.py      cancel jobs: taken off their queue, revoked, or terminated
    circuits.py    force a circuit open or closed, or reset it
    incidents.py   acknowledge or snooze incidents
    queues.py      pause and resume a queue on every worker
    periodic.py    run a periodic task now, outside its schedule; enable or disable one
    background.py  carry on an action a worker was handed
"""

from monitors.actions.background import resume
from monitors.actions.cancel import cancel_jobs
from monitors.actions.circuits import CIRCUIT_CHANGES, force_circuit
from monitors.actions.discard import discard_jobs
from monitors.actions.gate import PERMISSIONS, SURFACES, ActionRefused, ActionResult, TooLarge, allowed, audited
from monitors.actions.incidents import acknowledge_incident, acknowledge_incidents
from monitors.actions.periodic import NotSwitchable, run_periodic_now, set_periodic_enabled
from monitors.actions.purge import purge_messages, restore_messages
from monitors.actions.queues import pause_queue, resume_queue
from monitors.actions.replay import replay_jobs

__all__ = [
    "CIRCUIT_CHANGES", "NotSwitchable", "PERMISSIONS", "SURFACES", "ActionRefused", "ActionResult", "TooLarge", "acknowledge_incident",
    "cancel_jobs",
    "acknowledge_incidents", "allowed", "audited", "discard_jobs", "force_circuit", "pause_queue", "purge_messages",
    "replay_jobs", "restore_messages", "resume", "resume_queue", "run_periodic_now", "set_periodic_enabled",
]
