from django.db import migrations

# The Tasks pages read JobHistogram from its window index alone (0019), which PostgreSQL can do
# only on pages vacuum has marked all-visible; elsewhere every row found is fetched from the table
# as well (measured at 10 M jobs: the Tasks page over 24 h took 45–50 ms instead of 20–25 ms).
# By default autovacuum waits until a fifth of the table has changed: hours of a busy site's
# per-minute rows. After 1 % it runs about every ten minutes there, and a vacuum that only visits
# the pages changed since the last one is cheap. PostgreSQL only (SQLite has no vacuum to tune).
TABLE = "monitors_jobhistogram"
SETTINGS = ("autovacuum_vacuum_scale_factor", "autovacuum_vacuum_insert_scale_factor", "autovacuum_analyze_scale_factor")
SHARE = 0.01


def vacuum_often(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        quote = schema_editor.quote_name
        schema_editor.execute(f"ALTER TABLE {quote(TABLE)} SET ({', '.join(f'{name} = {SHARE}' for name in SETTINGS)})")


def as_by_default(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"ALTER TABLE {schema_editor.quote_name(TABLE)} RESET ({', '.join(SETTINGS)})")


class Migration(migrations.Migration):
    dependencies = [("monitors", "0019_histogram_index_with_seconds")]
    operations = [migrations.RunPython(vacuum_often, as_by_default, elidable=False)]
