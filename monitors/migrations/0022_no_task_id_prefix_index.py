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


# Dropping it locks the table (and on a partitioned one, every day) for an instant; behind a long
# query that instant would hold up the recorder and the pages, so the migration gives up instead
# and says so: run it again at a quieter moment.
LOCK_TIMEOUT = "10s"


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        for name in prefix_indexes(schema_editor):
            schema_editor.execute(f"DROP INDEX {schema_editor.quote_name(name)}")


class Migration(migrations.Migration):
    dependencies = [("monitors", "0021_histogram_bucket_covers_counts")]
    # Going back does not build it again: nothing needs it, and the way to day partitions and back
    # (migrate monitors 0015) would otherwise build it over the whole history only to drop it.
    # Django's own schema changes drop it with IF EXISTS, so its absence breaks none of them.
    operations = [migrations.RunPython(drop, migrations.RunPython.noop, elidable=False)]
