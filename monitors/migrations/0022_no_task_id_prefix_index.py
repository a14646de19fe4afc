from django.db import migrations

# Django gives every unique CharField on PostgreSQL a second index, in varchar_pattern_ops, for
# LIKE 'prefix%' look-ups. Nothing asks the job table for a task id by its prefix: the job page,
# the recorder's upsert and replay look a task id up whole, which the unique index on task_id (on
# a day-partitioned history: on task_id and enqueued_at) answers. The second one cost a sixth of
# the table's index space (benchmarks/dashboard.py's history: 19 of 149 MB a day of 333,000 jobs;
# at 86 M jobs a day, ~5 GB), an index more to update with every recorded event, and one more to
# open for every day partition whenever a query is planned over all of them.
# PostgreSQL only: SQLite has no such index. Found by its definition, not its name: a history
# converted to day partitions (0016) keeps the index under the plain table's name.
TABLE = "monitors_jobexecution"


def prefix_indexes(schema_editor):
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() AND tablename = %s"
                       " AND indexdef LIKE %s", [TABLE, "%(task_id varchar_pattern_ops)%"])
        return [row[0] for row in cursor.fetchall()]


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        for name in prefix_indexes(schema_editor):
            schema_editor.execute(f"DROP INDEX {schema_editor.quote_name(name)}")


def restore(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql" and not prefix_indexes(schema_editor):
        # Under the name Django gives it, so that a later change of the field finds it.
        name = schema_editor._create_index_name(TABLE, ["task_id"], suffix="_like")
        schema_editor.execute(f"CREATE INDEX {schema_editor.quote_name(name)} ON {schema_editor.quote_name(TABLE)}"
                              " (task_id varchar_pattern_ops)")


class Migration(migrations.Migration):
    dependencies = [("monitors", "0021_histogram_bucket_covers_counts")]
    operations = [migrations.RunPython(drop, restore, elidable=False)]
