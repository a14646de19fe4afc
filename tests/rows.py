"""Rows written straight into the execution table, for tests of what pages and detectors make of
them (the recorder's own tests write through the recorder)."""

from django.utils import timezone

from monitors.models import JobExecution


def job_row(task_id, task_name, queue, **fields):
    """A recorded job: succeeded just now unless `fields` say otherwise (`at`: its enqueue time)."""
    moment = fields.pop("at", None) or timezone.now()
    values = {"task_name": task_name, "state": "succeeded", "queue": queue, "enqueued_at": moment,
              "updated_at": moment, "args": [1], "kwargs": {}}
    values.update(fields)
    return JobExecution.objects.create(task_id=task_id, **values)
