"""Real Celery worker processes for integration tests, and waiting for what they record."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import redis
from django.db import connection

REPO = Path(__file__).resolve().parent.parent
REDIS_URL = "redis://127.0.0.1:6379"


def database_url_for_workers():
    """The URL of the database pytest-django created, for processes started by the tests."""
    settings = connection.settings_dict
    user = settings.get("USER") or "postgres"
    host = settings.get("HOST") or "127.0.0.1"
    port = settings.get("PORT") or 5432
    return f"postgresql://{user}@{host}:{port}/{settings['NAME']}"


def fresh_redis_url(db):
    redis.Redis.from_url(f"{REDIS_URL}/{db}").flushdb()
    return f"{REDIS_URL}/{db}"


class WorkerProcess:
    """`celery worker` with the prefork pool, in its own process group, logging to a file."""

    def __init__(self, log_path, env=None, queues="celery", concurrency=2, name="test", app="dashboard", cwd=REPO,
                 beat=False, python=sys.executable, inherit_env=True, beat_scheduler=None):
        """`python` and `inherit_env=False` run a worker of another virtualenv with exactly `env`,
        as another project's worker would run (tests/test_install_into_project.py)."""
        self.log_path = Path(log_path)
        base = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"} if inherit_env else {}
        self.env = {**base, **(env or {})}
        self.cwd = cwd
        self.name = name
        self.command = [
            str(python), "-m", "celery", "-A", app, "worker", "-P", "prefork",
            "-c", str(concurrency), "-Q", queues, "-n", f"{name}@%h", "-l", "info",
            "--without-mingle", "--without-gossip",
        ]
        if beat:  # celery beat inside the worker, its schedule file beside the log
            self.command += ["-B", "-s", str(self.log_path.with_suffix(".schedule"))]
            if beat_scheduler:  # e.g. django-celery-beat's DatabaseScheduler
                self.command += ["--scheduler", beat_scheduler]
        self.process = None

    def start(self, timeout=60):
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "w")
        self.process = subprocess.Popen(
            self.command, cwd=self.cwd, env=self.env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        wait_for(lambda: " ready." in self.log() or self.process.poll() is not None, timeout, "worker ready")
        if self.process.poll() is not None:
            raise RuntimeError(f"worker exited at start:\n{self.log()[-3000:]}")
        return self

    def name_on_host(self):
        """The worker's node name, as it answers broadcasts: `-n name@%h` with the host's name."""
        return f"{self.name}@{socket.gethostname()}"

    def log(self):
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout=30):
        """Warm shutdown (SIGTERM), as a deployment stops a worker: the recorder flushes."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self._log.close()

    @contextlib.contextmanager
    def paused(self):
        """Freeze the worker and its pool (SIGSTOP), as a busy fleet would be, so that nothing
        runs until the block ends: makes "who ran first" races deterministic in tests."""
        os.killpg(self.process.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.killpg(self.process.pid, signal.SIGCONT)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def wait_for(predicate, timeout=30, what="condition", interval=0.1, explain=None):
    """`predicate()` once it is true; else, after `timeout` seconds, an AssertionError that says
    what was awaited and, from `explain()`, what was seen instead."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            seen = f"; {explain()}" if explain else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{seen}")
        time.sleep(interval)
