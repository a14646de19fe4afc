"""Who a failure came from, read from the real exceptions of real clients talking to real servers
on loopback (an HTTP server answering 503, ports where nothing listens), and the services detector
on the rows the recorder writes: a service failing by its address, a task's dependency failing
when no address is known, and bugs that are not outages."""

import http.server
import smtplib
import socket
import threading
import time
import urllib.error
import urllib.request
from datetime import timedelta
from itertools import permutations

import httpx
import psycopg
import pytest
import redis
import requests
from django.db import connection, connections
from django.db.backends.postgresql.base import DatabaseWrapper
from django.utils import timezone
from redis.backoff import NoBackoff
from redis.retry import Retry

from demo import tasks
from monitors.detectors import run_detectors
from monitors.detectors.services import detect
from monitors.models import Finding, JobExecution
from monitors.recording import signals
from monitors.recording.events import exception_type
from monitors.recording.targets import failure_target
from monitors.recording.upsert import fold_events, write_rows
from tests.workers import WorkerProcess, database_url_for_workers, fresh_redis_url, wait_for


class Unavailable(http.server.BaseHTTPRequestHandler):
    """Answers every request 503, as a service in an outage does."""

    def do_GET(self):
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def unavailable():
    """A real HTTP server on a free loopback port answering 503; its "host:port"."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Unavailable)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def closed_port():
    """A port where nothing listens: bound by the system, then closed."""
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return port


@pytest.fixture
def silent_server():
    """A port that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    yield listener.getsockname()[1]
    listener.close()


def raised(call):
    """The exception `call` raised, its traceback (and so its frames) alive, as in the handlers."""
    with pytest.raises(Exception) as caught:
        call()
    return caught.value


# -- what targets.py reads from real clients' exceptions ------------------------------------------


@pytest.mark.parametrize("client", ["urllib", "requests", "httpx"])
def test_an_http_error_names_the_service_and_its_status(unavailable, client):
    url = f"http://{unavailable}/orders?page=2"
    call = {
        "urllib": lambda: urllib.request.urlopen(url, timeout=5),
        "requests": lambda: requests.get(url, timeout=5).raise_for_status(),
        "httpx": lambda: httpx.get(url, timeout=5).raise_for_status(),
    }[client]
    assert failure_target(raised(call)) == (unavailable, 503, "http")


@pytest.mark.parametrize("client", ["urllib", "requests", "httpx"])
def test_a_refused_http_connection_names_the_address_it_tried(closed_port, client):
    url = f"http://127.0.0.1:{closed_port}/hook"
    call = {
        "urllib": lambda: urllib.request.urlopen(url, timeout=5),
        "requests": lambda: requests.post(url, json={}, timeout=5),
        "httpx": lambda: httpx.post(url, json={}, timeout=5),
    }[client]
    assert failure_target(raised(call)) == (f"127.0.0.1:{closed_port}", None, "connection")


def test_a_service_that_never_answers_is_a_timeout_at_its_address(silent_server):
    error = raised(lambda: urllib.request.urlopen(f"http://127.0.0.1:{silent_server}/", timeout=0.2))
    assert failure_target(error) == (f"127.0.0.1:{silent_server}", None, "timeout")


def test_a_refused_postgresql_connection_names_the_server(closed_port):
    error = raised(lambda: psycopg.connect(host="127.0.0.1", port=closed_port, user="postgres", dbname="x", connect_timeout=3))
    assert isinstance(error, psycopg.OperationalError)
    assert failure_target(error) == (f"127.0.0.1:{closed_port}", None, "connection")


@pytest.mark.django_db  # pytest-django lets a test connect only when it asks to
def test_a_refused_database_through_djangos_connection_names_the_server(closed_port):
    settings = {**connection.settings_dict, "PORT": closed_port, "NAME": "unreachable",
                "OPTIONS": {"connect_timeout": 3}, "CONN_MAX_AGE": 0}
    unreachable = DatabaseWrapper(settings, alias="unreachable")
    error = raised(unreachable.ensure_connection)
    assert exception_type(error) == "django.db.utils.OperationalError"
    assert failure_target(error) == (f"127.0.0.1:{closed_port}", None, "connection")


def test_a_refused_redis_connection_names_the_server(closed_port):
    client = redis.Redis(host="127.0.0.1", port=closed_port, retry=Retry(NoBackoff(), 0), socket_connect_timeout=3)
    assert failure_target(raised(client.ping)) == (f"127.0.0.1:{closed_port}", None, "connection")


def test_a_refused_smtp_connection_names_the_server(closed_port):
    error = raised(lambda: smtplib.SMTP("127.0.0.1", closed_port, timeout=3))
    assert failure_target(error) == (f"127.0.0.1:{closed_port}", None, "connection")


def test_a_wrapped_error_names_the_service_its_cause_came_from(closed_port):
    class PartnerDown(Exception):
        pass

    def sync():
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{closed_port}/", timeout=5)
        except OSError as error:
            raise PartnerDown("the partner is down") from error

    assert failure_target(raised(sync)) == (f"127.0.0.1:{closed_port}", None, "connection")


def test_the_address_is_one_spelling_without_credentials_or_path():
    error = urllib.error.HTTPError("https://user:secret@API.Example.com/v1/orders?x=1", 502, "Bad Gateway", {}, None)
    assert failure_target(error) == ("api.example.com:443", 502, "http")


def test_a_bug_names_no_service_whatever_the_frames_hold():
    class Client:
        host, port = "api.example.com", 443

        def parse(self, answer):
            return answer["total"]

    assert failure_target(raised(lambda: Client().parse({}))) == ("", None, "")
    assert failure_target(raised(lambda: len(5))) == ("", None, "")


def test_it_survives_a_cycle_in_the_chain_and_objects_that_answer_anything():
    class Anything:
        def __getattr__(self, name):
            raise AssertionError(f"read {name} through __getattr__")

        def call(self):
            raise ConnectionResetError(104, "reset")

    error = raised(Anything().call)
    other = ValueError("while handling")
    error.__context__, other.__context__ = other, error
    assert failure_target(error) == ("", None, "connection")
    assert failure_target("not an exception") == ("", None, "")


def test_it_costs_well_under_a_millisecond(closed_port):
    error = raised(lambda: requests.get(f"http://127.0.0.1:{closed_port}/", timeout=5))
    started = time.perf_counter()
    for _ in range(200):
        failure_target(error)
    assert (time.perf_counter() - started) / 200 < 0.001


# -- the recorder keeps who the newest error came from -------------------------------------------


def error_events(task_id):
    """A retried attempt's error at a service, the next attempt's start, then its bug."""
    return [
        {"task_id": task_id, "task_name": "shop.sync", "state": "retried", "progress": 3, "error_progress": 3,
         "exception_type": "urllib.error.HTTPError", "exception_message": "HTTP Error 503: Service Unavailable",
         "error_target": "api.example.com:443", "error_status": 503, "error_kind": "http", "updated_at": timezone.now()},
        {"task_id": task_id, "task_name": "shop.sync", "state": "started", "progress": 6, "updated_at": timezone.now()},
        {"task_id": task_id, "task_name": "shop.sync", "state": "failed", "progress": 7, "error_progress": 7,
         "exception_type": "KeyError", "exception_message": "'total'", "error_target": "", "error_status": None,
         "error_kind": "", "updated_at": timezone.now()},
    ]


@pytest.mark.django_db(databases=["default", "embedded"], transaction=True)
@pytest.mark.parametrize("using", ["default", "embedded"])
def test_an_error_that_names_no_service_clears_the_one_an_earlier_attempt_named(using):
    for number, order in enumerate(permutations(range(3))):
        for cut in (1, 2, 3):
            task_id = f"cause-{using}-{number}-{cut}"
            events = [error_events(task_id)[index] for index in order]
            for batch in (events[:cut], events[cut:]):
                if batch:
                    write_rows(fold_events(batch), connections[using])
            job = JobExecution.objects.using(using).get(task_id=task_id)
            assert (job.exception_type, job.error_target, job.error_status, job.error_kind) == ("KeyError", "", None, "")

    task_id = f"cause-{using}-kept"
    retried, started, _ = error_events(task_id)
    write_rows(fold_events([retried]), connections[using])
    write_rows(fold_events([started]), connections[using])  # no error: the service's stays
    job = JobExecution.objects.using(using).get(task_id=task_id)
    assert (job.error_target, job.error_status, job.error_kind) == ("api.example.com:443", 503, "http")


# -- the services detector on recorded rows -------------------------------------------------------


def record_jobs(count, task, state="failed", ago=60, **fields):
    now = timezone.now()
    JobExecution.objects.bulk_create([
        JobExecution(task_id=f"{task}-{state}-{fields.get('error_target', '')}-{fields.get('error_status')}-{number}",
                     task_name=task, queue=task.rsplit(".", 1)[-1], state=state, updated_at=now,
                     enqueued_at=now - timedelta(seconds=ago + number + 1),
                     finished_at=now - timedelta(seconds=ago + number), **fields)
        for number in range(count)
    ])


@pytest.mark.django_db
def test_failures_at_one_address_are_one_failing_service():
    record_jobs(30, "app.tasks.sync", exception_type="urllib.error.HTTPError",
                exception_message="HTTP Error 503: Service Unavailable", error_target="127.0.0.1:8089",
                error_status=503, error_kind="http")
    record_jobs(5, "app.tasks.push", exception_type="urllib.error.HTTPError", exception_message="HTTP Error 503",
                error_target="127.0.0.1:8089", error_status=503, error_kind="http", ago=200)
    record_jobs(400, "app.tasks.sync", state="succeeded")

    [problem] = detect(timezone.now())
    assert (problem.kind, problem.subject, problem.count) == ("service_failing", "127.0.0.1:8089", 35)
    assert problem.title == ("Service 127.0.0.1:8089 is failing: 35 jobs of app.tasks.sync and app.tasks.push failed "
                             "(HTTP 503 ×35)")
    assert problem.severity == "warning"  # 35 of 435 jobs, none retrying: work still gets done
    assert problem.keys == ["service:127.0.0.1:8089"]
    assert problem.links == ["task:app.tasks.sync", "task:app.tasks.push", "queue:sync", "queue:push"]
    assert "circuit breaker" in problem.fix and "127.0.0.1:8089" in problem.fix
    assert "monitors.circuits.circuit" in problem.explanation
    evidence = problem.evidence
    assert evidence["statuses"] == {"503": 35} and evidence["kind"] == "http"
    assert evidence["tasks"] == {"app.tasks.sync": 30, "app.tasks.push": 5}
    assert evidence["exception_types"] == {"urllib.error.HTTPError": 35}
    assert evidence["sample_job_ids"][0] == "app.tasks.sync-failed-127.0.0.1:8089-503-0" and len(evidence["sample_job_ids"]) == 10
    assert evidence["example_error"] == "HTTP Error 503: Service Unavailable"
    assert evidence["first_failure"] < evidence["last_failure"]


@pytest.mark.django_db
def test_a_service_is_critical_when_its_jobs_retry_or_most_of_them_fail():
    record_jobs(12, "app.tasks.sync", state="retried", exception_type="ConnectionRefusedError",
                error_target="10.0.0.7:5432", error_kind="connection")
    record_jobs(100, "app.tasks.sync", state="succeeded")
    record_jobs(12, "app.tasks.mail", exception_type="TimeoutError", error_target="smtp.example.org:25", error_kind="timeout")
    record_jobs(2, "app.tasks.mail", state="succeeded")

    found = {problem.subject: problem for problem in detect(timezone.now())}
    assert found["10.0.0.7:5432"].severity == "critical"  # retrying: not getting done now
    assert found["10.0.0.7:5432"].title.endswith("12 jobs of app.tasks.sync retried (connection failed ×12)")
    assert found["smtp.example.org:25"].severity == "critical"  # 12 of 14
    assert found["smtp.example.org:25"].evidence["outcomes"] == {"failed": 12}


@pytest.mark.django_db
def test_a_task_failing_on_a_service_whose_address_is_unknown_has_a_failing_dependency():
    record_jobs(30, "app.tasks.report", exception_type="acme.client.ApiError", exception_message="upstream said no",
                error_status=503, error_kind="http")
    record_jobs(3, "app.tasks.report", state="succeeded")

    [problem] = detect(timezone.now())
    assert (problem.kind, problem.subject, problem.count) == ("service_failing", "dependency of app.tasks.report", 30)
    assert problem.title == "A dependency of app.tasks.report is failing (ApiError 503 ×30)"
    assert problem.severity == "critical"
    assert problem.keys == ["task:app.tasks.report"] and problem.links == ["task:app.tasks.report", "queue:report"]
    assert problem.evidence["statuses"] == {"503": 30} and problem.evidence["target"] == ""


@pytest.mark.django_db
def test_a_failing_dependency_must_be_most_of_the_tasks_jobs():
    record_jobs(12, "app.tasks.rates", exception_type="TimeoutError", error_kind="timeout")
    record_jobs(30, "app.tasks.rates", state="succeeded")  # 12 of 42: some calls time out, most work
    record_jobs(40, "app.tasks.quotes", exception_type="TimeoutError", error_kind="timeout")
    record_jobs(10, "app.tasks.quotes", state="succeeded")  # 40 of 50: the share, 80 %

    [problem] = detect(timezone.now())
    assert problem.subject == "dependency of app.tasks.quotes"
    assert problem.title == "A dependency of app.tasks.quotes is failing (TimeoutError ×40)"
    assert problem.evidence["kind"] == "timeout" and problem.evidence["share_of_jobs"] == 0.8


@pytest.mark.django_db
def test_bugs_breakers_and_small_or_old_clusters_are_not_failing_services():
    record_jobs(50, "app.tasks.total", exception_type="TypeError", exception_message="unsupported operand")
    record_jobs(20, "app.tasks.charge", exception_type="ConnectionError", error_target="pay.example:443",
                error_kind="connection", circuit="payments")  # behind a breaker: the circuits detector's
    record_jobs(5, "app.tasks.sync", exception_type="TimeoutError", error_target="crm.example:443", error_kind="timeout")
    record_jobs(20, "app.tasks.sync", exception_type="TimeoutError", error_target="old.example:443",
                error_kind="timeout", ago=3600)
    assert detect(timezone.now()) == []


# -- end to end: a real worker, a real outage ------------------------------------------------------


@pytest.fixture
def worker(transactional_db, tmp_path):
    """One per test: stopped (and its last rows written) before the test's tables are emptied,
    so that nothing it writes late is counted by a later test."""
    env = {"DATABASE_URL": database_url_for_workers(), "CELERY_BROKER_URL": fresh_redis_url(14)}
    with WorkerProcess(tmp_path / "worker.log", env=env) as process:
        yield process
    signals.get_writer().flush()  # this process's own events (the enqueues)


@pytest.mark.integration
def test_a_task_failing_on_a_service_records_it_and_opens_a_finding_that_names_it(worker, unavailable):
    jobs = [tasks.call_partner.delay(f"http://{unavailable}/orders", {"order": number}) for number in range(10)]
    ids = [job.id for job in jobs]
    failed = JobExecution.objects.filter(task_id__in=ids, state="failed").exclude(error_target="")
    wait_for(lambda: failed.count() == len(ids), timeout=40, what="the partner calls to fail and be recorded")

    job = JobExecution.objects.get(task_id=ids[0])
    assert job.exception_type == "urllib.error.HTTPError"  # not Celery's picklable stand-in, OSError
    assert job.exception_message == "HTTP Error 503: Service Unavailable"
    assert (job.error_target, job.error_status, job.error_kind) == (unavailable, 503, "http")
    assert "urllib.error.HTTPError: HTTP Error 503" in job.traceback

    outcome = run_detectors(["services"])["services"]
    [finding] = outcome.opened
    assert (finding.kind, finding.subject, finding.count) == ("service_failing", unavailable, 10)
    assert finding.title == f"Service {unavailable} is failing: 10 jobs of demo.tasks.call_partner failed (HTTP 503 ×10)"
    assert Finding.objects.get(pk=finding.pk).keys == [f"service:{unavailable}"]


@pytest.mark.integration
def test_a_retried_job_records_the_error_it_retried_on(worker):
    job = tasks.flaky.delay(1)  # retries once on ConnectionError("flaky service"), then succeeds
    # The retry may run in the other pool process, whose writer can flush its success before the
    # first one flushes the failed attempt: wait for both.
    recorded = JobExecution.objects.filter(task_id=job.id, state="succeeded", error_progress__isnull=False)
    wait_for(recorded.exists, timeout=30, what="the flaky job to retry and succeed")
    row = recorded.get()
    # One row: the retry's republish and its run name the first publish's time, the key of the
    # job's day partition on PostgreSQL (another time would have written a second row).
    assert JobExecution.objects.filter(task_id=job.id).count() == 1 and row.retries == 1
    assert (row.exception_type, row.exception_message) == ("ConnectionError", "flaky service")
    assert (row.error_target, row.error_status, row.error_kind) == ("", None, "connection")
