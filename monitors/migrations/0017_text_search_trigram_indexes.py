import sys

from django.db import DatabaseError, migrations, transaction

# The jobs list's text filter (monitors/actions/selection.py: TEXT_INDEXES) is Django's icontains on
# the error message and the arguments, which PostgreSQL runs as UPPER(column::text) LIKE UPPER('%…%').
# A trigram index answers that LIKE only when it is built on exactly that expression, so each index
# here repeats it; one per column, and the planner ORs the two (a BitmapOr). One index over the two
# columns joined was measured too: the same size and speed, but its query would no longer be the
# ORM's own, and a match could straddle the join.
INDEXES = {
    "jobwatch_text_error": "UPPER(exception_message)",
    "jobwatch_text_args": "UPPER((args)::text)",
}
TABLE = "monitors_jobexecution"


def create(apps, schema_editor):
    """PostgreSQL only; SQLite has no trigram index and keeps the bounded search.

    The indexes are made by SQL rather than declared in the model's Meta: a GinIndex with an
    OpClass there would be made on SQLite too, and fail. Django's view of the model does not change.

    On the day-partitioned job table (migration 0016) an index made on the parent is made on every
    partition, and on every partition made later. It is a plain CREATE INDEX, in the migration's
    transaction: the recorder's writes wait while the indexes are built (about a minute per million
    jobs on a small machine; see the README's text filter paragraph)."""
    connection = schema_editor.connection
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        try:
            # pg_trgm ships with PostgreSQL's contrib and is a trusted extension (PostgreSQL 13+): a
            # role that may create objects in the database may create it. Where it cannot (a managed
            # server that does not offer it, a role without the right), the migration still applies
            # and the text filter keeps its bounded search; the message says how to add it later.
            with transaction.atomic(using=connection.alias):
                cursor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        except DatabaseError as error:
            sys.stderr.write(
                f"\n  Jobwatch: the pg_trgm extension could not be created ({str(error).strip().splitlines()[0]}).\n"
                "  The jobs list's text filter keeps searching only the newest jobs. To index it later: have a\n"
                "  superuser run CREATE EXTENSION pg_trgm in this database, then\n"
                "  manage.py migrate monitors 0016 && manage.py migrate monitors\n")
            return
        # The extension may live in a schema that is not on the search path (e.g. "extensions").
        cursor.execute("SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace"
                       " WHERE e.extname = 'pg_trgm'")
        operators = f"{connection.ops.quote_name(cursor.fetchone()[0])}.gin_trgm_ops"
        for name, expression in INDEXES.items():
            cursor.execute(f"CREATE INDEX IF NOT EXISTS {name} ON {TABLE} USING gin (({expression}) {operators})")


def drop(apps, schema_editor):
    """The indexes go; the extension stays (something else in the database may use it)."""
    if schema_editor.connection.vendor != "postgresql":
        return
    with schema_editor.connection.cursor() as cursor:
        for name in INDEXES:
            cursor.execute(f"DROP INDEX IF EXISTS {name}")


class Migration(migrations.Migration):
    """PostgreSQL: trigram indexes (pg_trgm) for the jobs list's text filter, so that a search of
    the arguments and error messages is exact over the whole history instead of the newest jobs.
    Nothing on SQLite, and nothing in Django's model state."""

    dependencies = [
        ("monitors", "0016_history_partitioned_by_day"),
    ]

    operations = [migrations.RunPython(create, drop, elidable=False)]
