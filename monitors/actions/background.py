"""Carrying on an action handed to a worker (the `jobwatch.run_action` task): the audit log entry
holds everything needed to run it, so another worker can pick it up after a crash."""

from monitors.actions.gate import fail, finish
from monitors.actions.purge import MessageSelection, run_purge
from monitors.actions.replay import run_replay
from monitors.actions.selection import JobSelection
from monitors.models import ActionLog
from monitors.replica import primary_reads


@primary_reads()  # like every action, on what is there now (monitors/replica.py)
def resume(action_id):
    """Run (or carry on with) an action handed to the background. Safe to run again after a
    worker died midway: replays are idempotent per request key, and a purge takes only what is
    still queued."""
    log = ActionLog.objects.filter(pk=action_id, outcome=ActionLog.Outcome.RUNNING).first()
    if log is None:
        return None
    parameters = log.parameters
    try:
        if log.action == "replay_jobs":
            log.succeeded = log.failed = 0
            selection = JobSelection.from_description(parameters["selection"])
            run_replay(log, selection, parameters.get("force", False), parameters["request_key"],
                       up_to_id=parameters.get("up_to_id"))
        elif log.action == "purge_messages":
            selection = MessageSelection.from_description(parameters["messages"])
            run_purge(log, parameters["queue"], selection, limit=parameters.get("limit"))
        else:
            raise ValueError(f"{log.action} does not run in the background")
    except Exception as error:
        fail(log, error)
        raise
    finish(log)
    return log
