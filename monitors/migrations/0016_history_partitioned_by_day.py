from django.db import migrations

from monitors import partitions


def partition(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        for history in partitions.HISTORY_TABLES:
            partitions.convert(schema_editor.connection, history, partitioned=True)


def unpartition(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        for history in partitions.HISTORY_TABLES:
            partitions.convert(schema_editor.connection, history, partitioned=False)


class Migration(migrations.Migration):
    """PostgreSQL: the job history and the per-minute tallies become tables partitioned by day
    (monitors/partitions.py), so that retention drops whole days instead of deleting rows. The
    rows are copied into the new table in one transaction: plan for the copy's time and disk on a
    big history (about N minutes per 10 million jobs here, see the README's Scaling section).
    SQLite is left as it is. Django's view of the models does not change: the job table's
    primary key is (id, enqueued_at) in the database, and `id` alone to the ORM, which only ever
    looks a row up by it. Later changes to these two tables' fields work as on any table (columns
    and indexes added to the partitioned table reach every partition)."""

    dependencies = [
        ("monitors", "0015_periodic_tally_counts_through"),
    ]

    operations = [migrations.RunPython(partition, unpartition, elidable=False)]
