"""The job history partitioned by day on PostgreSQL (monitors/partitions.py, migration 0016): an
existing filled table migrates with every row, id and index kept, and back; days are made ahead
and a row that arrived before its day's partition moves into it; retention drops whole days."""

import json
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection, transaction
from django.db.migrations.executor import MigrationExecutor

from monitors import partitions
from monitors.conf import setting
from monitors.models import JobExecution, JobTally
from monitors.recording.upsert import fold_events, write_rows
from monitors.retention import prune_history

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="partitions are PostgreSQL's; SQLite keeps plain tables"),
]

BEFORE, PARTITIONED = ("monitors", "0015_periodic_tally_counts_through"), ("monitors", "0016_history_partitioned_by_day")
NOW = datetime.now(UTC)
DAY = timedelta(days=1)


def migrate(target):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate([target])


def latest():
    executor = MigrationExecutor(connection)
    return [key for key in executor.loader.graph.leaf_nodes() if key[0] == "monitors"][0]


def partitions_of(table):
    with connection.cursor() as cursor:
        cursor.execute("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                       " WHERE i.inhparent = to_regclass(%s) ORDER BY 1", [table])
        return [row[0] for row in cursor.fetchall()]


def where(task_id):
    with connection.cursor() as cursor:
        cursor.execute("SELECT tableoid::regclass::text FROM monitors_jobexecution WHERE task_id = %s", [task_id])
        return cursor.fetchone()[0]


def index_names(table):
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexname FROM pg_indexes WHERE tablename = %s", [table])
        return {row[0] for row in cursor.fetchall()}


def task_id_lookup_index():
    """The index PostgreSQL reads to find one job by its task id (the job page, replay), with
    sequential scans priced out so that a tiny table shows the plan a large one gets."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("EXPLAIN (FORMAT JSON) SELECT id FROM monitors_jobexecution WHERE task_id = 'old-3'")
        plan = cursor.fetchone()[0]
    names = set()

    def walk(node):
        if "Index Name" in node:
            names.add(node["Index Name"].replace(node.get("Relation Name", ""), "monitors_jobexecution", 1))
        for child in node.get("Plans", ()):
            walk(child)

    walk((plan if isinstance(plan, list) else json.loads(plan))[0]["Plan"])
    assert len(names) == 1, names
    return names.pop()


def add_prefix_index():
    """The task id's prefix index Django made with the table, as every installation made before
    0022 has it (going back past 0022 does not build it again)."""
    with connection.schema_editor() as editor:
        name = editor._create_index_name("monitors_jobexecution", ["task_id"], suffix="_like")
    with connection.cursor() as cursor:
        cursor.execute(f'CREATE INDEX IF NOT EXISTS "{name}" ON monitors_jobexecution (task_id varchar_pattern_ops)')


def fill_plain_table():
    """What an installation of the release before has: jobs over the last days (some whose enqueue
    was never recorded), one far older than the retention, tallies."""
    jobs = []
    for number in range(300):
        enqueued = NOW - (number % 4) * DAY - timedelta(minutes=number)
        jobs.append(JobExecution(task_id=f"old-{number}", task_name="shop.charge", state="succeeded", progress=3,
                                 queue="default", enqueued_at=None if number % 10 == 0 else enqueued,
                                 received_at=enqueued + timedelta(seconds=1), worker="w1", updated_at=enqueued))
    jobs[1].enqueued_at = NOW - 90 * DAY
    JobExecution.objects.bulk_create(jobs)
    with connection.cursor() as cursor:
        for minute in range(5):
            cursor.execute("INSERT INTO monitors_jobtally (minute, metric, task_name, queue, exception, count, runtime_sum)"
                           " VALUES (%s, 'succeeded', 'shop.charge', 'default', '', 3, 0.5)",
                           [NOW.replace(second=0, microsecond=0) - timedelta(minutes=minute)])
        cursor.execute("SELECT id, task_id FROM monitors_jobexecution")
        return dict(cursor.fetchall())


def test_a_filled_table_migrates_to_day_partitions_keeping_every_row_id_and_index_and_back():
    target = latest()
    try:
        migrate(BEFORE)
        assert partitions_of("monitors_jobexecution") == []
        add_prefix_index()
        indexes_before = index_names("monitors_jobexecution")
        ids = fill_plain_table()
        migrate(target)

        assert partitions.partition_key(connection, "monitors_jobexecution") == "enqueued_at"
        assert partitions.partition_key(connection, "monitors_jobtally") == "minute"
        assert dict(JobExecution.objects.values_list("id", "task_id")) == ids
        # A job whose enqueue was never recorded takes the first time it has: its receipt.
        bare = JobExecution.objects.get(task_id="old-10")
        assert bare.enqueued_at == bare.received_at
        assert where("old-0") == partitions.partition_name("monitors_jobexecution", partitions.day_start(NOW))
        assert where("old-1") == "monitors_jobexecution_default"  # older than the retention: the catch-all
        days = {name for name in partitions_of("monitors_jobexecution") if not name.endswith("_default")}
        ahead = setting("PARTITION_DAYS_AHEAD")
        assert len(days) >= 4 + ahead
        assert partitions.partition_name("monitors_jobexecution", partitions.day_start(NOW + ahead * DAY)) in days
        assert JobTally.objects.count() == 5
        indexes_after = index_names("monitors_jobexecution")
        # Every index of the plain table, by name (and later migrations'), but the task id's prefix
        # index, which 0022 drops: a task id is looked up whole, through its unique index.
        prefix_index = {name for name in indexes_before if name.endswith("_like")}
        assert len(prefix_index) == 1 and not indexes_after & prefix_index
        assert indexes_after >= indexes_before - prefix_index
        assert task_id_lookup_index() == "monitors_jobexecution_task_id_enqueued_at_key"
        some_day = sorted(days)[0]
        assert len(index_names(some_day)) == len(indexes_after)  # and on each partition

        # The recorder writes on: new ids after the copied ones, a known job merged into its row.
        write_rows(fold_events([{"task_id": "old-2", "state": "failed", "progress": 7, "updated_at": NOW,
                                 "finished_at": NOW, "exception_type": "ValueError", "error_progress": 7},
                                {"task_id": "new-1", "task_name": "shop.ship", "state": "enqueued", "progress": 0,
                                 "enqueued_at": NOW, "updated_at": NOW}]), connection)
        assert JobExecution.objects.filter(task_id="old-2").count() == 1
        assert JobExecution.objects.get(task_id="old-2").state == "failed"
        assert JobExecution.objects.get(task_id="new-1").id > max(ids)

        migrate(BEFORE)  # and back: one plain table, the same rows
        assert partitions_of("monitors_jobexecution") == [] and partitions.partition_key(connection, "monitors_jobexecution") is None
        assert JobExecution.objects.count() == len(ids) + 1 and JobTally.objects.count() == 5
        assert index_names("monitors_jobexecution") == indexes_before - prefix_index  # 0022 does not build it again
    finally:
        migrate(target)
    assert partitions.partition_key(connection, "monitors_jobexecution") == "enqueued_at"


def catch_all_gauge(client, settings):
    """/metrics' catch-all rows of the job table, as a Prometheus scraper reads them."""
    from prometheus_client.parser import text_string_to_metric_families

    settings.JOBWATCH = {**settings.JOBWATCH, "METRICS_TOKEN": "s3cret"}
    body = client.get("/jobwatch/metrics", HTTP_AUTHORIZATION="Bearer s3cret").content.decode()
    families = {family.name: family for family in text_string_to_metric_families(body)}
    samples = {sample.labels["table"]: sample.value for sample in families["jobwatch_history_catch_all_rows"].samples}
    days = {sample.labels["table"]: sample.value for sample in families["jobwatch_history_day_partitions"].samples}
    return samples["monitors_jobexecution"], days["monitors_jobexecution"]


def test_days_are_made_ahead_and_a_row_that_came_early_moves_into_its_day(client, settings):
    far = partitions.day_start(NOW + 20 * DAY)
    write_rows(fold_events([{"task_id": "early", "task_name": "shop.later", "state": "enqueued", "progress": 0,
                             "enqueued_at": far + timedelta(hours=5), "updated_at": NOW}]), connection)
    assert where("early") == "monitors_jobexecution_default"
    rows, days_before = catch_all_gauge(client, settings)
    assert rows == 1  # what an operator alerts on: days arriving without a partition of their own

    made = partitions.prepare(connection, now=far, ahead=2)
    assert catch_all_gauge(client, settings) == (0, days_before + sum(name.startswith("monitors_jobexecution_p") for name in made))
    assert partitions.partition_name("monitors_jobexecution", far) in made
    assert partitions.partition_name("monitors_jobtally", far + 2 * DAY) in made
    assert where("early") == partitions.partition_name("monitors_jobexecution", far)
    assert partitions.prepare(connection, now=far, ahead=2) == []  # nothing left to make
    # The moved row is a row like any other: found, and merged into by later events.
    write_rows(fold_events([{"task_id": "early", "state": "succeeded", "progress": 3, "enqueued_at": far + timedelta(hours=5),
                             "finished_at": far + timedelta(hours=6), "updated_at": far + timedelta(hours=6)}]), connection)
    assert JobExecution.objects.get(task_id="early").state == "succeeded"


def test_retention_drops_whole_days_and_keeps_the_day_of_the_cutoff():
    start = partitions.day_start(NOW - 40 * DAY)
    partitions.ensure_days(connection, start, start + 3 * DAY)
    rows = []
    for offset in range(4):
        for hour in (1, 13):
            moment = start + offset * DAY + timedelta(hours=hour)
            rows.append({"task_id": f"day{offset}-{hour}", "task_name": "shop.old", "state": "succeeded", "progress": 3,
                         "enqueued_at": moment, "updated_at": moment})
    rows.append({"task_id": "ancient", "task_name": "shop.old", "state": "succeeded", "progress": 3,
                 "enqueued_at": NOW - 400 * DAY, "updated_at": NOW - 400 * DAY})  # in the catch-all
    rows.append({"task_id": "recent", "task_name": "shop.new", "state": "succeeded", "progress": 3,
                 "enqueued_at": NOW, "updated_at": NOW})
    write_rows(fold_events(rows), connection)

    cutoff_now = start + (30 + 2) * DAY + timedelta(hours=12)  # retention 30 days: the cutoff is day 2, 12:00
    pruned = prune_history(now=cutoff_now)

    assert pruned["jobs"] == 2 * 2 + 1  # days 0 and 1 whole, and the catch-all's ancient job
    left = set(JobExecution.objects.values_list("task_id", flat=True))
    assert left == {"day2-1", "day2-13", "day3-1", "day3-13", "recent"}  # day 2 holds the cutoff: kept whole
    names = partitions_of("monitors_jobexecution")
    assert partitions.partition_name("monitors_jobexecution", start) not in names
    assert partitions.partition_name("monitors_jobexecution", start + 2 * DAY) in names
