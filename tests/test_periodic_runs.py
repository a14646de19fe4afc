"""Each job a periodic task sends records which entry sent it (`origin_entry`), however the
schedule is kept: celery beat's scheduler (the entry read from the frame that sends it — what
django-celery-beat's DatabaseScheduler inherits too), or the `periodic_task_name` header
django-celery-beat puts on its messages. Jobs sent any other way name no entry. (Real beat
processes: tests/test_beat_watch.py, whose beat sends Jobwatch's own entries.)"""

from datetime import timedelta

import pytest
from celery.beat import ScheduleEntry, Scheduler

from monitors.models import JobExecution
from tests.brokers import celery_app
from tests.workers import fresh_redis_url

pytestmark = [pytest.mark.django_db(transaction=True)]  # the recorder writes on its own connection


def test_a_job_sent_by_a_beat_scheduler_names_its_entry(flush_recorder):
    app = celery_app(fresh_redis_url(10))
    entry = ScheduleEntry(name="nightly invoices", task="demo.tasks.echo", schedule=timedelta(hours=1), args=(1,), app=app)
    sent = Scheduler(app, lazy=True).apply_async(entry, advance=False)
    flush_recorder()
    job = JobExecution.objects.get(task_id=sent.id)
    assert (job.origin_entry, job.origin_kind) == ("nightly invoices", "beat")


def test_django_celery_beats_header_names_the_entry_and_other_jobs_name_none(flush_recorder):
    app = celery_app(fresh_redis_url(10))
    named = app.send_task("demo.tasks.echo", args=[2], headers={"periodic_task_name": "sync partners (db)"})
    plain = app.send_task("demo.tasks.echo", args=[3])
    odd = app.send_task("demo.tasks.echo", args=[4], headers={"periodic_task_name": ["not", "a", "name"]})
    flush_recorder()
    assert JobExecution.objects.get(task_id=named.id).origin_entry == "sync partners (db)"
    assert JobExecution.objects.get(task_id=named.id).origin_kind == "beat"
    assert JobExecution.objects.get(task_id=plain.id).origin_entry == ""
    assert JobExecution.objects.get(task_id=odd.id).origin_entry == ""
    # An entry's runs, newest first, through the partial index.
    assert list(JobExecution.objects.filter(origin_entry="sync partners (db)").values_list("task_id", flat=True)) == [named.id]
