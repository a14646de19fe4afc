"""Reads on a replica (monitors/replica.py), against real PostgreSQL streaming replication.

The test makes its own small primary (initdb, wal_level=replica) and a standby of it
(pg_basebackup -R), each on a free port, as the `postgres` OS user, and removes both at the end:
the machine's own cluster may hold databases far too big to copy. The site runs in a subprocess
configured as a user would configure it — dashboard.settings with DATABASE_URL on the primary and
REPLICA_DATABASE_URL on the standby — and answers requests through Django's test client, the
queries each request ran on each alias reported back. Replay is paused on the standby
(pg_wal_replay_pause) to make "written on the primary, not yet on the replica" a state the test
can look at rather than a race.
"""

import json
import os
import pwd
import queue
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg
import pytest
from django.apps import apps

from monitors import replica
from monitors.models import JobExecution
from monitors.web.respond import respond
from tests.workers import REPO, wait_for

pytestmark = pytest.mark.integration


def postgres_bin():
    for folder in sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda path: int(path.parent.name),
                         reverse=True):
        if all((folder / tool).exists() for tool in ("initdb", "pg_ctl", "pg_basebackup")):
            return folder
    found = shutil.which("pg_basebackup")
    return Path(found).parent if found and shutil.which("initdb") and shutil.which("pg_ctl") else None


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Replication:
    """A primary and a streaming standby of it, in a folder of their own."""

    def __init__(self, bin_dir):
        self.bin = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="jobwatch-replica-"))
        # initdb refuses to run as root: as root (the tests' usual user) the servers run as postgres.
        self.as_postgres = []
        if os.geteuid() == 0:
            account = pwd.getpwnam("postgres")
            os.chown(self.root, account.pw_uid, account.pw_gid)
            self.as_postgres = ["runuser", "-u", "postgres", "--"]
        self.primary_port, self.replica_port = free_port(), free_port()
        self.started = []

    def run(self, tool, *args):
        done = subprocess.run([*self.as_postgres, str(self.bin / tool), *map(str, args)], capture_output=True,
                              text=True, timeout=60)
        if done.returncode:
            logs = "".join(f"\n--- {log.name}:\n{log.read_text(errors='replace')[-2000:]}"
                           for log in self.root.glob("*.log"))
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr or done.stdout}{logs}")

    def start(self, name, port):
        # Only TCP on 127.0.0.1, its socket in its own folder; fsync off: nothing here must survive a crash.
        options = (f"-c port={port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.root} "
                   "-c wal_level=replica -c max_wal_senders=4 -c fsync=off -c shared_buffers=16MB")
        self.run("pg_ctl", "start", "-w", "-t", "30", "-D", self.root / name, "-l", self.root / f"{name}.log",
                 "-o", options)
        self.started.append(name)

    def start_primary(self):
        # initdb's pg_hba.conf with --auth=trust lets 127.0.0.1 connect, replication included.
        self.run("initdb", "-D", self.root / "primary", "--auth=trust", "-U", "postgres", "--no-sync")
        self.start("primary", self.primary_port)
        with self.connect(self.primary_port, "postgres") as connection:
            connection.execute("CREATE DATABASE jobwatch")

    def start_replica(self):
        # A copy of the primary as it is now (a fast checkpoint first), which then streams the rest.
        self.run("pg_basebackup", "-h", "127.0.0.1", "-p", self.primary_port, "-U", "postgres", "-D",
                 self.root / "replica", "-R", "-X", "stream", "-c", "fast", "--no-sync")
        self.start("replica", self.replica_port)

    def tear_down(self):
        for name in self.started:
            subprocess.run([*self.as_postgres, str(self.bin / "pg_ctl"), "stop", "-m", "immediate", "-D",
                            self.root / name], capture_output=True, timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)

    def stop_replica(self):
        self.run("pg_ctl", "stop", "-m", "fast", "-D", self.root / "replica")
        self.started.remove("replica")

    def url(self, port):
        return f"postgresql://postgres@127.0.0.1:{port}/jobwatch"

    @staticmethod
    def connect(port, database="jobwatch"):
        return psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname=database, autocommit=True)

    def on_primary(self, sql, *params):
        with self.connect(self.primary_port) as connection:
            return connection.execute(sql, params).fetchall()

    def on_replica(self, sql, *params):
        with self.connect(self.replica_port) as connection:
            return connection.execute(sql, params).fetchall()

    def caught_up(self):
        """Wait until the standby has replayed everything the primary has written so far."""
        [(position,)] = self.on_primary("SELECT pg_current_wal_lsn()::text")
        wait_for(lambda: self.on_replica("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", position)[0][0], 15,
                 "the replica to replay the primary's writes")

    def pause_replay(self):
        self.on_replica("SELECT pg_wal_replay_pause()")
        wait_for(lambda: self.on_replica("SELECT pg_get_wal_replay_pause_state()")[0][0] == "paused", 10,
                 "replay to pause")

    def resume_replay(self):
        self.on_replica("SELECT pg_wal_replay_resume()")


# The site, in a process of its own: one JSON command a line in, one JSON answer a line out.
SITE = r"""
import json, sys
import django
django.setup()
from django.core.management import call_command
from django.db import close_old_connections, connections
from django.test import Client
from django.utils import timezone

call_command("migrate", verbosity=0)
from django.contrib.auth import get_user_model
from dashboard.celery import app
from monitors.models import JobExecution
from monitors.recording import signals
from monitors.tasks import run_detectors

client = Client(HTTP_HOST="localhost")
client.force_login(get_user_model().objects.create(username="operator", is_staff=True, is_superuser=True))
close_old_connections()


def served(work):
    # Each alias's statements (DEBUG is on, so Django keeps them), then what a server does after each
    # request: connections past their CONN_MAX_AGE closed (the primary's go back to its pool; the
    # replica's, kept 600 s, stay open for the next request).
    for alias in connections:
        connections[alias].queries_log.clear()
    answer = work()
    answer["sql"] = {alias: [query["sql"] for query in connections[alias].queries_log] for alias in connections}
    close_old_connections()
    return answer


def failed_jobs(task, count):
    now = timezone.now()
    jobs = [JobExecution(task_id=f"{task}-{now.timestamp()}-{n}", task_name=task, state="failed", queue="celery",
                         enqueued_at=now, updated_at=now, started_at=now, finished_at=now, args=[n], kwargs={},
                         exception_type="ConnectionError", exception_message="gateway down") for n in range(count)]
    JobExecution.objects.bulk_create(jobs)  # a write: on the primary
    return {"task_ids": [job.task_id for job in jobs]}


def record(task):
    # The recorder proper: the enqueue is seen by its publish signal and written by its writer.
    task_id = app.send_task(task, args=[1]).id
    assert signals.get_writer().flush(), signals.get_writer().counters.last_error
    return {"task_id": task_id}


def answer(command):
    if "get" in command:
        response = client.get(command["get"])
        return {"status": response.status_code, "body": response.content.decode()}
    if "post" in command:
        response = client.post(command["post"], command["data"])
        return {"status": response.status_code, "location": response.get("Location", ""),
                "body": response.content.decode()}
    if "detect" in command:
        run_detectors.apply()
        return {}
    if "failed_jobs" in command:
        return failed_jobs(command["failed_jobs"], command["count"])
    if "record" in command:
        return record(command["record"])
    if "replica_checks_every" in command:  # how long a check of the replica is believed; none believed now
        from monitors import replica
        replica.CHECK_SECONDS = command["replica_checks_every"]
        replica._checked.clear()
        return {}
    if "replica_backend" in command:  # the server process this site's replica connection talks to
        kept = connections["replica"].connection
        return {"pid": kept.info.backend_pid if kept is not None else None}
    raise ValueError(command)


print("@@" + json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    print("@@" + json.dumps(served(lambda: answer(json.loads(line))), default=str), flush=True)
"""


class Site:
    def __init__(self, replication, var_dir):
        env = {name: value for name, value in os.environ.items() if not name.startswith(("JOBWATCH_", "DJANGO_"))}
        env.update({
            "DJANGO_SETTINGS_MODULE": "dashboard.settings", "DEBUG": "1", "JOBWATCH_VAR_DIR": str(var_dir),
            "DATABASE_URL": replication.url(replication.primary_port),
            "REPLICA_DATABASE_URL": replication.url(replication.replica_port),
            "CELERY_BROKER_URL": "filesystem://", "PYTHONPATH": str(REPO),
        })
        self.log_path = Path(var_dir) / "site.log"
        self.log = open(self.log_path, "w")
        self.process = subprocess.Popen([sys.executable, "-c", SITE], cwd=REPO, env=env, stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=self.log, text=True)
        self.answers = queue.Queue()
        threading.Thread(target=self.read, daemon=True).start()

    def wait_until_ready(self):
        self.next_answer(timeout=90)  # migrated, and the operator logged in

    def read(self):
        for line in self.process.stdout:
            if line.startswith("@@"):
                self.answers.put(json.loads(line[2:]))
        self.answers.put(None)

    def next_answer(self, timeout=30):
        try:
            answer = self.answers.get(timeout=timeout)
        except queue.Empty:
            answer = None
        if answer is None:
            raise AssertionError(f"the site did not answer:\n{self.log_path.read_text()[-4000:]}")
        return answer

    def ask(self, **command):
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        return self.next_answer()

    def get(self, path):
        answer = self.ask(get=path)
        assert answer["status"] == 200, f"{path}: {answer['status']}\n{answer['body'][:2000]}"
        return answer

    def get_json(self, path):
        return json.loads(self.get(path)["body"])

    def close(self):
        self.process.stdin.close()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


def touching(statements, table):
    return [sql for sql in statements if f'"{table}"' in sql]


@pytest.fixture(scope="module")
def replication_and_site(tmp_path_factory):
    bin_dir = postgres_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL's server programs (initdb, pg_ctl, pg_basebackup) are not installed")
    as_root = os.geteuid() == 0
    if as_root and (shutil.which("runuser") is None or "postgres" not in {user.pw_name for user in pwd.getpwall()}):
        pytest.skip("as root, the test's servers run as the postgres user (through runuser): one of them is missing")
    replication, site = Replication(bin_dir), None
    try:
        replication.start_primary()
        # The site migrates the primary while the standby is made: the schema reaches the standby
        # partly in the base backup, partly streamed.
        site = Site(replication, tmp_path_factory.mktemp("replica-site"))
        replication.start_replica()
        site.wait_until_ready()
        yield replication, site
    finally:
        if site is not None:
            site.close()
        replication.tear_down()


@pytest.fixture
def servers(replication_and_site):
    return replication_and_site[0]


@pytest.fixture
def site(replication_and_site):
    return replication_and_site[1]


def test_only_the_history_is_read_on_the_replica_and_only_where_asked(settings, monkeypatch):
    settings.JOBWATCH = {**settings.JOBWATCH, "READ_DATABASE": "replica"}
    monkeypatch.setattr(replica, "usable", lambda alias: True)
    router = replica.ReadReplicaRouter()
    models = apps.get_app_config("monitors").get_models()
    assert router.db_for_read(JobExecution) is None  # a script, a command, an upkeep task: the primary
    with replica.replica_reads():
        routed = {model.__name__ for model in models if router.db_for_read(model) == "replica"}
        with replica.primary_reads():  # an action inside a page's request
            assert router.db_for_read(JobExecution) is None
    assert routed == {"JobExecution", "JobPayload", "JobTally", "OriginTally", "JobHistogram", "TaskCounter", "QueueSample",
                      "RecorderProcess", "CircuitEvent"}
    # Never a write: an object read on the replica is saved on the primary.
    job = JobExecution(task_id="read-there")
    job._state.db = "replica"
    assert router.db_for_write(JobExecution, instance=job) == "default"
    assert router.db_for_write(JobExecution) is None
    assert router.allow_migrate("replica", "monitors") is False


def test_a_replica_too_far_behind_is_not_read_from(settings, monkeypatch):
    settings.JOBWATCH = {**settings.JOBWATCH, "READ_DATABASE": "replica"}
    monkeypatch.setattr(replica, "_checked", {})
    monkeypatch.setattr(replica, "check", lambda alias: replica.remember(alias, replica.ReplicaState(
        reachable=True, standby=True, lag=replica.MAX_LAG_SECONDS + 15)))
    with replica.replica_reads():
        assert replica.ReadReplicaRouter().db_for_read(JobExecution) is None


@pytest.mark.parametrize("status, says, style", [
    ({"reachable": True, "standby": True, "lag_seconds": 45.0, "reads_from": "default", "error": ""},
     "replica replica is more than 30 s behind: reads from the primary until it catches up", "warning"),
    ({"reachable": False, "standby": False, "lag_seconds": None, "reads_from": "default",
      "error": 'OperationalError: "><script>alert(1)</script>'},
     "replica replica is unreachable: reads from the primary until it answers", "warning"),
    ({"reachable": True, "standby": False, "lag_seconds": None, "reads_from": "replica", "error": ""},
     "reads from replica, not a streaming replica: no lag to show", "ok"),
])
def test_the_overview_tile_says_where_the_history_is_read_from(rf, status, says, style):
    # The Overview's polled fragment alone, as htmx asks for it: no database needed.
    request = rf.get("/jobwatch/", headers={"HX-Request": "true", "HX-Target": "overview-health"})
    context = {"replica": {"alias": "replica", "max_lag_seconds": 30.0, **status}, "incidents_by_severity": [],
               "recorder": {}, "monitor": []}
    page = respond(request, "jobwatch/overview.html", context, fragments=["overview-health"]).content.decode()
    assert f'id="replica-lag" class="tile {style}"' in page and says in page
    assert "<script>" not in page  # the error (the database's words) is escaped
    assert "&lt;script&gt;alert(1)" in page if status["error"] else True


def test_the_migrated_schema_replicates(servers, site):
    servers.caught_up()
    assert servers.on_replica("SELECT pg_is_in_recovery()") == [(True,)]
    assert servers.on_replica("SELECT to_regclass('monitors_jobexecution') IS NOT NULL") == [(True,)]
    migrations = "SELECT count(*) FROM django_migrations WHERE app = 'monitors'"
    assert servers.on_replica(migrations) == servers.on_primary(migrations) != [(0,)]


def test_pages_read_what_the_recorder_wrote_from_the_replica_once_it_is_replayed(servers, site):
    servers.pause_replay()
    try:
        task_id = site.ask(record="shop.send_receipt")["task_id"]
        recorded = servers.on_primary("SELECT state FROM monitors_jobexecution WHERE task_id = %s", task_id)
        assert recorded == [("enqueued",)]
        listed = site.get("/jobwatch/api/jobs/?task=shop.send_receipt")
        assert task_id not in listed["body"]  # not replayed yet: the page read the replica
        assert touching(listed["sql"]["replica"], "monitors_jobexecution")
        assert not touching(listed["sql"]["default"], "monitors_jobexecution")
        assert site.ask(get=f"/jobwatch/jobs/{task_id}/")["status"] == 404
    finally:
        servers.resume_replay()
    servers.caught_up()
    assert task_id in site.get("/jobwatch/api/jobs/?task=shop.send_receipt")["body"]
    assert task_id in site.get(f"/jobwatch/jobs/{task_id}/")["body"]


def test_an_action_reads_and_writes_on_the_primary(servers, site):
    servers.pause_replay()
    try:
        [task_id] = site.ask(failed_jobs="shop.charge", count=1)["task_ids"]  # on the primary only, for now
        done = site.ask(post="/jobwatch/jobs/discard/", data={"id": task_id, "confirmed": "yes"})
        assert done["status"] == 302, done["body"][:2000]
        assert not done["sql"]["replica"]  # a POST reads nothing there
        assert touching(done["sql"]["default"], "monitors_jobexecution")
        entry = site.get_json(f"/jobwatch/api{done['location'].removeprefix('/jobwatch')}")["entry"]
        assert (entry["action"], entry["matched"], entry["succeeded"]) == ("discard_jobs", 1, 1)  # it found the job
        assert servers.on_primary("SELECT discarded_at IS NOT NULL FROM monitors_jobexecution WHERE task_id = %s",
                                  task_id) == [(True,)]
    finally:
        servers.resume_replay()


def lag_on_metrics(body):
    [line] = [line for line in body.splitlines() if line.startswith("jobwatch_replica_lag_seconds{")]
    return float(line.rsplit(" ", 1)[1])


def test_the_overview_and_metrics_show_how_far_behind_the_replica_is(servers, site):
    servers.caught_up()
    assert site.get_json("/jobwatch/api/")["replica"]["lag_seconds"] < 5
    servers.pause_replay()
    try:
        site.ask(record="shop.send_receipt")  # WAL the replica receives and does not replay
        time.sleep(1.5)
        status = site.get_json("/jobwatch/api/")["replica"]
        assert status["reachable"] and status["standby"] and status["reads_from"] == "replica"
        assert status["lag_seconds"] >= 1.5
        page = site.get("/jobwatch/")["body"]
        assert 'id="replica-lag" class="tile ok"' in page
        assert "reads from replica replica: behind the primary" in page
        metrics = site.get("/jobwatch/metrics")
        assert lag_on_metrics(metrics["body"]) >= 1.5
        assert not touching(metrics["sql"]["replica"], "monitors_taskcounter")  # its counters: from the primary
    finally:
        servers.resume_replay()
    servers.caught_up()
    assert site.get_json("/jobwatch/api/")["replica"]["lag_seconds"] < 5


def test_detectors_read_the_replica_and_record_findings_on_the_primary(servers, site):
    site.ask(failed_jobs="shop.flaky", count=25)
    servers.caught_up()
    run = site.ask(detect=True)
    assert touching(run["sql"]["replica"], "monitors_jobexecution")
    assert not touching(run["sql"]["replica"], "monitors_finding")
    assert [sql for sql in touching(run["sql"]["default"], "monitors_finding") if sql.startswith("INSERT")]
    assert servers.on_primary("SELECT count(*) FROM monitors_finding WHERE kind = 'failure_rate' "
                              "AND subject = 'shop.flaky'") == [(1,)]


def test_the_replica_connection_is_kept_between_requests_and_replaced_once_dropped(servers, site):
    # Kept: a new connection would plan its first history query over every day partition cold.
    assert site.get("/jobwatch/api/jobs/")["sql"]["replica"]
    first = site.ask(replica_backend=True)["pid"]
    assert first is not None
    assert site.get("/jobwatch/api/jobs/")["sql"]["replica"]
    assert site.ask(replica_backend=True)["pid"] == first
    # The replica drops it (a restart, a failover, an idle timeout): the next page is not failed by
    # it, and reads the replica again on a new connection.
    assert servers.on_replica("SELECT pg_terminate_backend(%s)", first) == [(True,)]
    assert site.get("/jobwatch/api/jobs/")["sql"]["replica"]
    assert site.ask(replica_backend=True)["pid"] not in (None, first)


def test_pages_answer_from_the_primary_while_the_replica_is_down(servers, site):
    # The replica seen answering just before it stops, and believed for longer than this test
    # takes: the first request after the stop learns of it from its kept connection alone.
    site.ask(replica_checks_every=120)
    assert site.get("/jobwatch/api/jobs/")["sql"]["replica"]
    servers.stop_replica()
    task_id = site.ask(record="shop.after_the_outage")["task_id"]
    # First, while this process last saw the replica answer: the request's connection fails, and
    # its reads go to the primary instead.
    listed = site.get("/jobwatch/api/jobs/?task=shop.after_the_outage")
    assert task_id in listed["body"] and not listed["sql"]["replica"]
    assert site.ask(get=f"/jobwatch/jobs/{task_id}/")["status"] == 200
    status = site.get_json("/jobwatch/api/")["replica"]
    assert (status["reachable"], status["reads_from"]) == (False, "default")
    assert status["error"].startswith("OperationalError")  # the reason, as the database driver gave it
    page = site.get("/jobwatch/")["body"]
    assert 'id="replica-lag" class="tile warning"' in page
    assert "replica replica is unreachable: reads from the primary until it answers" in page
    metrics = site.get("/jobwatch/metrics")["body"]
    assert 'jobwatch_replica_reachable{alias="replica"} 0.0' in metrics
    assert not [line for line in metrics.splitlines() if line.startswith("jobwatch_replica_lag_seconds{")]
