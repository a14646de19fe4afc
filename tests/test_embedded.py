"""The embedded default end to end: SQLite and kombu's filesystem broker under a fresh var/
folder, no server at all. Migrate, start a real worker, enqueue from another process, and the
rows show the jobs succeeded with their origins."""

import os
import sqlite3
import subprocess
import sys

import pytest

from tests.workers import REPO, WorkerProcess, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def embedded_env(tmp_path):
    env = {key: value for key, value in os.environ.items() if key not in ("DATABASE_URL", "CELERY_BROKER_URL")}
    env.update(JOBWATCH_VAR_DIR=str(tmp_path / "var"), DJANGO_SETTINGS_MODULE="dashboard.settings")
    return env


def manage(env, *args):
    return subprocess.run([sys.executable, "manage.py", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def rows(database, sql):
    with sqlite3.connect(database) as db:
        return db.execute(sql).fetchall()


def test_it_records_jobs_on_sqlite_and_the_filesystem_broker(embedded_env, tmp_path):
    migrated = manage(embedded_env, "migrate", "--no-input")
    assert migrated.returncode == 0, migrated.stderr
    database = tmp_path / "var" / "jobwatch.sqlite3"

    with WorkerProcess(tmp_path / "worker.log", env=embedded_env, name="embedded", inherit_env=False):
        enqueued = manage(
            embedded_env, "shell", "-c",
            "from demo.models import Customer; from demo import tasks; "
            "Customer.objects.create(name='Ann', email='ann@example.com'); print(tasks.noop.delay().id)",
        )
        assert enqueued.returncode == 0, enqueued.stderr
        noop_id = enqueued.stdout.strip().splitlines()[-1]

        state = wait_for(
            lambda: rows(database, f"SELECT state, worker FROM monitors_jobexecution WHERE task_id = '{noop_id}' AND state = 'succeeded'"),
            timeout=60, what="the no-op job to succeed",
        )
        assert state[0][1].startswith("embedded@")
        receivers = wait_for(
            lambda: rows(
                database,
                "SELECT origin_receiver FROM monitors_jobexecution WHERE origin_kind = 'save' AND state = 'succeeded' ORDER BY origin_receiver",
            ) if len(rows(database, "SELECT 1 FROM monitors_jobexecution WHERE origin_kind = 'save' AND state = 'succeeded'")) == 3 else None,
            timeout=60, what="the three customer receivers' jobs to succeed",
        )
    assert [name for (name,) in receivers] == [
        "demo.receivers.refresh_customer_segments",
        "demo.receivers.reindex_customer",
        "demo.receivers.sync_customer_to_crm",
    ]
    # The Fan-out page's counts, written with the enqueues: one save, three jobs.
    for resolution in (60, 3600):
        assert rows(database, "SELECT origin_model, sum(jobs), sum(saved_jobs), sum(model_saves) FROM monitors_origintally"
                              f" WHERE resolution = {resolution} GROUP BY origin_model") == [("demo.Customer", 3, 3, 1)]
    report = manage(embedded_env, "jobwatch_recorder", "--json")
    assert report.returncode == 0 and '"events_dropped_overflow": 0' in report.stdout


def test_a_worker_survives_a_burst_of_publishes_on_the_filesystem_broker(embedded_env, tmp_path):
    """kombu's filesystem transport let a worker read a message file before it was written
    (kombu#1551) and die with "Unrecoverable error: JSONDecodeError"; the embedded default's
    transport renames each message into place only once complete."""
    assert manage(embedded_env, "migrate", "--no-input").returncode == 0
    env = {**embedded_env, "JOBWATCH_RECORDER_ENABLED": "0"}  # the broker is under test, not the recorder
    worker = WorkerProcess(tmp_path / "worker.log", env=env, name="burst").start()
    try:
        burst = manage(env, "shell", "-c", "from demo import tasks\nfor _ in range(3000): tasks.noop.delay()")
        assert burst.returncode == 0, burst.stderr
        wait_for(lambda: worker.log().count("succeeded in") >= 3000 or worker.process.poll() is not None,
                 timeout=240, what="3000 jobs to run")
        assert worker.process.poll() is None, worker.log()[-2000:]
        assert "Unrecoverable error" not in worker.log()
    finally:
        worker.stop()
