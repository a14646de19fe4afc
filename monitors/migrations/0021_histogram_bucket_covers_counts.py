from django.db import migrations

# A task's page reads that task's histogram rows over its window (runtime and wait, per hour for
# 7 days: ~3,000 rows) through the unique bucket key, whose first column is the task. The rows of
# one task lie one per table page, among every other task's rows of the same hour, so reading their
# counts fetched ~1,800 pages: 17 ms at 10 M jobs. With the counts and seconds carried in the key's
# index (INCLUDE, not part of what must be unique), PostgreSQL answers from the index alone: 7 ms.
# It costs the recorder nothing more per write: count and total are in the window index (0019)
# already, so an update of a bucket never was a HOT update. PostgreSQL only; SQLite keeps the plain
# key. The constraint keeps its name and columns: the recorder's ON CONFLICT still names it by them.
TABLE = "monitors_jobhistogram"
NAME = "jobwatch_one_histogram_bucket"
KEY = "task_name, resolution, start, measure, outcome, upper_ms"


def replace_key(schema_editor, include):
    if schema_editor.connection.vendor != "postgresql":
        return
    quote = schema_editor.quote_name
    # One statement: the table is never without its key, and no writer sees it missing.
    schema_editor.execute(f"ALTER TABLE {quote(TABLE)} DROP CONSTRAINT {quote(NAME)},"
                          f" ADD CONSTRAINT {quote(NAME)} UNIQUE ({KEY}){include}")


def cover_counts(apps, schema_editor):
    replace_key(schema_editor, " INCLUDE (count, total)")


def key_alone(apps, schema_editor):
    replace_key(schema_editor, "")


class Migration(migrations.Migration):
    dependencies = [("monitors", "0020_histogram_vacuumed_often")]
    operations = [migrations.RunPython(cover_counts, key_alone, elidable=False)]
