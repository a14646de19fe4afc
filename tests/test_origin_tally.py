"""The Fan-out page's counts per minute (OriginTally): kept by the recorder's writer from real
enqueues, equal to what the job rows say, each save counted once however its jobs are split
between receivers, tasks and batches; and filled from the recorded jobs on upgrade."""

from datetime import timedelta

import pytest
from celery import current_app
from django.db import connection, transaction
from django.db.models import Count
from django.utils import timezone

from demo.models import Customer, Order
from monitors.models import JobExecution, OriginTally
from monitors.recording.events import counted
from monitors.recording.origin_tally import SavesCounted, count_history, origin_increments
from tests.rows import job_row

MINUTE = timezone.now().replace(second=0, microsecond=0)


def enqueue(task, receiver, save="", model="shop.Order", kind="save"):
    """An enqueue event as the publisher builds it: a first publish, counted as sent."""
    return counted({"task_name": task, "origin_kind": kind, "origin_model": model, "origin_receiver": receiver,
                    "origin_save": save}, "sent", "web-1", "celery")


def by_origin(totals):
    """The minute rows' counts by (model, receiver, task); the hour's rows say the same."""
    minutes = {key[3:]: value for key, value in totals.items() if key[1] == 60}
    assert minutes == {key[3:]: value for key, value in totals.items() if key[1] == 3600}
    return minutes


def test_a_save_is_counted_once_per_receiver_and_once_per_model_across_batches():
    saves = SavesCounted()
    first = origin_increments([
        enqueue("shop.email", "shop.receivers.notify", save="s1"),
        enqueue("shop.sms", "shop.receivers.notify", save="s1"),  # the same receiver, another task
        enqueue("shop.index", "shop.receivers.reindex", save="s1"),
    ], MINUTE, saves)
    # The same save's last job reaches the next batch (a flush in between): not a new save.
    second = origin_increments([enqueue("shop.index", "shop.receivers.reindex", save="s1"),
                                enqueue("shop.index", "shop.receivers.reindex", save="s2")], MINUTE, saves)
    assert by_origin(first) == {
        ("shop.Order", "shop.receivers.notify", "shop.email"): (1, 1, 1, 1),
        ("shop.Order", "shop.receivers.notify", "shop.sms"): (1, 1, 0, 0),
        ("shop.Order", "shop.receivers.reindex", "shop.index"): (1, 1, 1, 0),
    }
    assert by_origin(second) == {("shop.Order", "shop.receivers.reindex", "shop.index"): (2, 2, 1, 1)}


def test_only_first_publishes_that_a_save_or_signal_set_off_are_counted():
    retry = {"task_name": "shop.email", "origin_kind": "save", "origin_receiver": "shop.receivers.notify", "origin_save": "s1"}
    beat = enqueue("shop.report", "celery.beat", kind="beat")
    overridden = enqueue("shop.email", "shop.models.Order.save", save="")  # an overridden save(): no save id
    no_receiver = enqueue("shop.email", "", save="s2")
    totals = by_origin(origin_increments([retry, beat, overridden, no_receiver], MINUTE, SavesCounted()))
    assert totals == {("shop.Order", "shop.models.Order.save", "shop.email"): (1, 0, 0, 0)}


def test_a_forgotten_save_counts_again_so_jobs_per_save_reads_low_not_high():
    saves = SavesCounted(size=2)
    totals = origin_increments([enqueue("t", "r", save=name) for name in ("a", "b", "c", "a")], MINUTE, saves)
    assert by_origin(totals)[("shop.Order", "r", "t")] == (4, 4, 4, 4)


@pytest.fixture
def no_messages_left():
    yield
    current_app.control.purge()  # what these tests published has no worker to run it


@pytest.mark.django_db(transaction=True)  # the recorder commits on a connection of its own
def test_the_recorder_keeps_the_counts_the_job_rows_hold(admin_client, flush_recorder, no_messages_left):
    """Real saves of the demo shop, enqueuing through its receivers (deferred ones included):
    the page's tables, read from the counts, say what a grouped read of the job rows says."""
    customers = [Customer.objects.create(name=f"C{n}", email=f"c{n}@example.com") for n in range(3)]
    customers[0].last_seen_at = timezone.now()
    customers[0].save(update_fields=["last_seen_at"])
    with transaction.atomic():
        Order.objects.create(customer=customers[1], total_cents=1000)  # its receivers defer to the commit
    flush_recorder()

    jobs = JobExecution.objects.filter(origin_kind__in=("save", "delete", "signal")).exclude(origin_receiver="")
    expected = {(row["origin_model"], row["origin_receiver"]): (row["jobs"], row["saves"]) for row in
                jobs.values("origin_model", "origin_receiver").annotate(jobs=Count("id"), saves=Count("origin_save", distinct=True))}
    assert expected[("demo.Customer", "demo.receivers.sync_customer_to_crm")] == (4, 4)

    data = admin_client.get("/jobwatch/api/fanout/").json()
    assert {(o["origin_model"], o["origin_receiver"]): (o["jobs"], o["saves"]) for o in data["origins"]} == expected
    models = {model["origin_model"]: model for model in data["models"]}
    customer_jobs = sum(jobs for (model, _), (jobs, _) in expected.items() if model == "demo.Customer")
    assert (models["demo.Customer"]["jobs"], models["demo.Customer"]["saves"]) == (customer_jobs, 4)
    assert models["demo.Customer"]["receivers"] == len([key for key in expected if key[0] == "demo.Customer"])
    assert models["demo.Customer"]["per_save"] == round(customer_jobs / 4, 1)


def order_saved(task_id, at, save):
    return job_row(task_id, "shop.email", "celery", at=at, origin_kind="save", origin_model="shop.Order",
                   origin_receiver="shop.receivers.notify", origin_save=save)


@pytest.mark.django_db
def test_an_upgrade_counts_the_last_week_from_the_job_rows():
    now = timezone.now().replace(second=0, microsecond=0)
    for n, minutes_ago in enumerate((5, 5, 5, 61, 60 * 24 * 8)):
        order_saved(f"j{n}", now - timedelta(minutes=minutes_ago, seconds=-10), "s1" if n < 2 else f"s{n}")
    job_row("beat", "shop.report", "celery", origin_kind="beat", origin_receiver="celery.beat")

    jobs, rows = count_history(JobExecution, OriginTally, connection, now - timedelta(days=7), now)
    assert jobs == 4 and rows in (3, 4)  # two minutes, and their one or two hours
    minutes = {(row.start, row.jobs, row.saves, row.model_saves) for row in OriginTally.objects.filter(resolution=60)}
    assert minutes == {(now - timedelta(minutes=5), 3, 2, 2), (now - timedelta(minutes=61), 1, 1, 1)}
    hours = OriginTally.objects.filter(resolution=3600)
    assert sum(row.jobs for row in hours) == 4 and sum(row.saves for row in hours) == 3
    assert all(row.start.minute == 0 for row in hours)
    # Counting again counts only what is older than what is counted: here, nothing.
    assert count_history(JobExecution, OriginTally, connection, now - timedelta(days=7)) == (0, 0)


@pytest.mark.django_db
def test_counting_after_the_recorder_began_adds_to_its_hour_and_counts_no_job_twice():
    hour = timezone.now().replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    order_saved("before", hour + timedelta(minutes=10), "s1")
    order_saved("after", hour + timedelta(minutes=40), "s2")  # counted by the recorder, below
    for start, resolution in ((hour + timedelta(minutes=40), 60), (hour, 3600)):
        OriginTally.objects.create(start=start, resolution=resolution, origin_kind="save", origin_model="shop.Order",
                                   origin_receiver="shop.receivers.notify", task_name="shop.email", jobs=1, saved_jobs=1,
                                   saves=1, model_saves=1)
    assert count_history(JobExecution, OriginTally, connection, hour - timedelta(days=1))[0] == 1
    assert OriginTally.objects.get(resolution=3600).jobs == 2
    assert sorted(OriginTally.objects.filter(resolution=60).values_list("jobs", flat=True)) == [1, 1]
    # Once the minutes are pruned (kept fewer days than the hours), the hours say what is counted.
    OriginTally.objects.filter(resolution=60).delete()
    order_saved("older", hour - timedelta(hours=5), "s3")
    assert count_history(JobExecution, OriginTally, connection, hour - timedelta(days=1))[0] == 1  # "older" alone
    assert sorted(OriginTally.objects.filter(resolution=3600).values_list("jobs", flat=True)) == [1, 2]


@pytest.mark.django_db
def test_the_command_counts_and_a_migration_leaves_a_big_week_to_it(monkeypatch, capsys):
    import importlib

    from django.apps import apps
    from django.core.management import call_command

    order_saved("j1", timezone.now() - timedelta(hours=3), "s1")
    order_saved("j2", timezone.now() - timedelta(hours=3), "s1")
    upgrade = importlib.import_module("monitors.migrations.0023_fanout_counts_by_origin")
    monkeypatch.setattr(upgrade, "MOST_JOBS", 1)
    upgrade.count_the_last_week(apps, type("SchemaEditor", (), {"connection": connection})())
    assert "run `manage.py jobwatch_count_origins`" in capsys.readouterr().out and not OriginTally.objects.exists()

    call_command("jobwatch_count_origins", "--days", "1")
    assert "Counted 2 jobs" in capsys.readouterr().out
    assert sum(OriginTally.objects.filter(resolution=60).values_list("jobs", flat=True)) == 2


@pytest.mark.django_db
def test_the_benchmark_history_counts_origins_as_the_recorder_does():
    """benchmarks/dashboard.py fills the counts of its generated history in SQL: the same rows."""
    if connection.vendor != "postgresql":
        pytest.skip("the benchmark's history is PostgreSQL's")
    from benchmarks.dashboard_data import ORIGIN_TALLY_SQL

    now = timezone.now().replace(second=0, microsecond=0)
    for n in range(12):
        job_row(f"j{n}", f"shop.task{n % 2}", "celery", at=now - timedelta(minutes=n % 3, seconds=-n),
                origin_kind="delete" if n == 11 else "save", origin_model="shop.Order",
                origin_receiver=f"shop.receivers.r{n % 3}", origin_save="" if n == 10 else f"s{n // 4}")
    count_history(JobExecution, OriginTally, connection, now - timedelta(hours=1), now + timedelta(minutes=1))
    recorder = set(OriginTally.objects.values_list("start", "resolution", "origin_kind", "origin_model", "origin_receiver", "task_name",
                                                   "jobs", "saved_jobs", "saves", "model_saves"))
    OriginTally.objects.all().delete()
    ids = JobExecution.objects.values_list("id", flat=True)
    with connection.cursor() as cursor:
        for unit, resolution in (("minute", 60), ("hour", 3600)):
            cursor.execute(ORIGIN_TALLY_SQL, {"lo": min(ids), "hi": max(ids), "since": now - timedelta(hours=1),
                                              "unit": unit, "resolution": resolution})
    assert set(OriginTally.objects.values_list("start", "resolution", "origin_kind", "origin_model", "origin_receiver", "task_name",
                                               "jobs", "saved_jobs", "saves", "model_saves")) == recorder
    assert sum(row[8] for row in recorder if row[1] == 60) < 12  # saves shared by receivers and tasks were in play
