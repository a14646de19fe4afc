"""Jobwatch's periodic tasks. monitors.integration.watch_celery_app() puts them on the beat
schedule; each is safe to run on several workers at once."""

from celery import shared_task
from django.db import connections, router

from monitors import partitions, retention, sampling
from monitors.actions import resume
from monitors.actions.cancel import KILL_TASK, kill_if_still_running
from monitors.actions.gate import RUN_ACTION_TASK
from monitors.alerts import run_alerts as alert
from monitors.heartbeats import heartbeat
from monitors.detectors import run_detectors as detect
from monitors.models import JobExecution


@shared_task(name="jobwatch.sample_queues", ignore_result=True)
def sample_queues():
    """One sample of every queue (depth, in flight, oldest age, rates) into QueueSample."""
    with heartbeat("jobwatch.sample_queues"):
        return len(sampling.sample_queues())


@shared_task(name="jobwatch.run_detectors", ignore_result=True)
def run_detectors():
    """Every detector over the recorded data; findings opened, updated and resolved."""
    with heartbeat("jobwatch.run_detectors"):
        outcomes = detect()
    return {name: (len(o.opened), len(o.updated), len(o.resolved)) for name, o in outcomes.items()}


@shared_task(name="jobwatch.send_alerts", ignore_result=True)
def send_alerts():
    """The monitor's own rules, incidents from findings, and the notifications they call for."""
    with heartbeat("jobwatch.send_alerts"):
        return alert()


@shared_task(name=RUN_ACTION_TASK, ignore_result=True, acks_late=True, reject_on_worker_lost=True)
def run_action(action_id):
    """A replay or purge too large to run inside the request that asked for it. Acknowledged
    when done, so a worker that dies midway leaves it to another (resuming is safe)."""
    log = resume(action_id)
    return log.outcome if log else None


@shared_task(name=KILL_TASK, ignore_result=True)
def kill_cancelled(task_ids):
    """Cancelled running jobs that SIGTERM did not stop within CANCEL_GRACE_SECONDS: SIGKILL."""
    return len(kill_if_still_running(task_ids))


# -- retention (monitors/retention.py) --------------------------------------------------------------


@shared_task(name="jobwatch.roll_up_samples", ignore_result=True)
def roll_up_samples():
    """Raw queue samples past SAMPLE_RAW_DAYS folded into 10-minute ones; those past
    SAMPLE_RETENTION_DAYS deleted."""
    return retention.roll_up_samples()


@shared_task(name="jobwatch.prune_archive", ignore_result=True)
def prune_archive():
    """Archived messages and kept arguments older than ARCHIVE_RETENTION_DAYS."""
    return retention.prune_archive()


@shared_task(name="jobwatch.prepare_partitions", ignore_result=True)
def prepare_partitions():
    """PostgreSQL: the day partitions of the job history for yesterday, today and
    PARTITION_DAYS_AHEAD days ahead (monitors/partitions.py). Nothing to do on SQLite."""
    connection = connections[router.db_for_write(JobExecution)]
    return partitions.prepare(connection)


@shared_task(name="jobwatch.prune_history", ignore_result=True)
def prune_history():
    """Jobs, transitions, resolved findings and the audit log past their retention."""
    return retention.prune_history()
