from django.db import migrations

# The planner's row estimate of a query, computed inside the server (monitors/web/counting.py). A
# client asking EXPLAIN (FORMAT JSON) itself receives the whole plan to read one number from it:
# over a day-partitioned history that is a plan node per partition, tens of kilobytes to send and
# parse on every count that had to fall back to the estimate.
CREATE = """
CREATE OR REPLACE FUNCTION jobwatch_row_estimate(query text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    plan json;
BEGIN
    EXECUTE 'EXPLAIN (FORMAT JSON) ' || query INTO plan;
    RETURN (plan -> 0 -> 'Plan' ->> 'Plan Rows')::numeric::bigint;
END
$$
"""
DROP = "DROP FUNCTION IF EXISTS jobwatch_row_estimate(text)"


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE)


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP)


class Migration(migrations.Migration):
    dependencies = [("monitors", "0017_text_search_trigram_indexes")]
    operations = [migrations.RunPython(create, drop, elidable=False)]
