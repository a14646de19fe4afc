"""A benchmark's own PostgreSQL database, dropped and created afresh for each run."""

POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def recreate_database(name):
    import psycopg
    from psycopg import sql

    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
