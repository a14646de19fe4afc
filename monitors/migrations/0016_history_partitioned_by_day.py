from django.db import migrations

from monitors import partitions
from monitors.conf import setting


def partition(apps, schema_editor):
    connection = schema_editor.connection
    if connection.vendor != "postgresql" or not setting("PARTITION_HISTORY"):
        return
    # What the database says now, not what this process saw of it earlier (a process that migrates
    # a database it recreated: the test suite, the benchmarks).
    partitions.forget()
    for history in partitions.HISTORY_TABLES:
        if partitions.partition_key(connection, history.table) is None:
            partitions.convert(connection, history, partitioned=True)
    partitions.forget()


def unpartition(apps, schema_editor):
    connection = schema_editor.connection
    if connection.vendor != "postgresql":
        return
    partitions.forget()
    for history in partitions.HISTORY_TABLES:
        if partitions.partition_key(connection, history.table) is not None:
            partitions.convert(connection, history, partitioned=False)
    partitions.forget()


class Migration(migrations.Migration):
    """PostgreSQL, with JOBWATCH["PARTITION_HISTORY"] on: the job history and the per-minute tallies
    become tables partitioned by day (monitors/partitions.py), so that retention drops whole days
    instead of deleting rows. (Off, nothing changes; migrating back to 0015 and forward again
    applies a changed setting.) The rows are copied into the new table in one transaction, the
    recorder's writes waiting: plan for the copy's time and twice the table's disk on a big history.
    SQLite is left as it is. Django's view of the models does not change: the job table's
    primary key is (id, enqueued_at) in the database, and `id` alone to the ORM, which only ever
    looks a row up by it. Later changes to these two tables' fields work as on any table (columns
    and indexes added to the partitioned table reach every partition)."""

    dependencies = [
        ("monitors", "0015_periodic_tally_counts_through"),
    ]

    operations = [migrations.RunPython(partition, unpartition, elidable=False)]
