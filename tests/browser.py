"""The dashboard in a real Chromium, for tests/test_browser.py: finding the browser, watching a
page for console errors and Content Security Policy violations, screenshots, and an hour of the
demo shop's monitoring data for every page to show."""

import os
import random
import shutil
import uuid
from datetime import timedelta
from pathlib import Path

from django.db import connection
from django.utils import timezone

from monitors.heartbeats import WATCHED
from monitors.models import (ActionLog, ArchivedMessage, Circuit, CircuitEvent, Finding, Incident, JobExecution, JobTally,
                             MonitorHeartbeat, QueueSample, RecorderProcess)

REPO = Path(__file__).resolve().parent.parent
SCREENSHOTS = REPO / "test-artifacts" / "screenshots"
VIEWPORT = {"width": 1280, "height": 900}
# Debian's Chromium, not Playwright's own build: that one is downloaded at install time, which
# this network does not allow. JOBWATCH_CHROMIUM names another binary.
CHROMIUM_NAMES = ("/usr/bin/chromium", "chromium", "chromium-browser")
# What works on a closed network, as root: no sandbox (root), nothing that phones home.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 15_000
MAX_HEIGHT = 2400


def find_chromium():
    """The Chromium to drive, or None: JOBWATCH_CHROMIUM if set, else Debian's."""
    wanted = os.environ.get("JOBWATCH_CHROMIUM")
    for name in (wanted,) if wanted else CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


# Chromium reports a CSP violation on the console, in words that change between versions; this
# listener (run before the page's own scripts, and exempt from the policy because the browser
# injects it) says it in one form on every page.
CSP_LISTENER = """
document.addEventListener("securitypolicyviolation", function (event) {
  console.error("CSP violation: " + event.violatedDirective + " blocked " + (event.blockedURI || "inline code")
                + " (" + event.sourceFile + ":" + event.lineNumber + ")");
});
"""


class PageWatch:
    """Everything that went wrong on a page: console errors (CSP violations among them), uncaught
    exceptions, and this site's requests that failed or answered 4xx/5xx."""

    def __init__(self, page, origin):
        self.page, self.origin, self.problems = page, origin, []
        page.add_init_script(CSP_LISTENER)
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.problems.append(f"uncaught error on {page.url}: {error}"))
        page.on("response", self._response)
        page.on("requestfailed", self._request_failed)

    def _console(self, message):
        url = message.location.get("url", "")
        if message.type == "error" and not asked_for_by_the_browser(url):
            self.problems.append(f"console error on {self.page.url}: {message.text} ({url})")

    def _response(self, response):
        if response.status >= 400 and response.url.startswith(self.origin) and not asked_for_by_the_browser(response.url):
            self.problems.append(f"HTTP {response.status} for {response.url}")

    def _request_failed(self, request):
        if "ERR_ABORTED" not in (request.failure or ""):  # a poll cut short by leaving the page is no failure
            self.problems.append(f"request failed: {request.url}: {request.failure}")

    def take(self):
        problems, self.problems = self.problems, []
        return problems


def asked_for_by_the_browser(url):
    """Chromium asks for /favicon.ico on its own when a page names no icon; the pages do not."""
    return url.endswith("/favicon.ico")


def screenshot(page, name):
    """The whole page as test-artifacts/screenshots/NAME.png, cut at MAX_HEIGHT pixels (the PNGs are
    kept in the repository)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    width, height = page.evaluate("() => [document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
    clip = {"x": 0, "y": 0, "width": width, "height": MAX_HEIGHT} if height > MAX_HEIGHT else None
    page.screenshot(path=path, full_page=True, clip=clip, animations="disabled", caret="hide")
    return path


# -- Data: an hour in the demo shop, as the recorder, the sampler and the detectors leave it. ----

CRM = "demo.tasks.sync_customer_to_crm"
SEGMENTS = "demo.tasks.refresh_customer_segments"
CHARGE = "demo.tasks.charge_payment"
INVENTORY = "demo.tasks.reserve_inventory"
CONFIRMATION = "demo.tasks.send_order_confirmation"
WAREHOUSE = "demo.tasks.notify_warehouse"
GATEWAY_ERROR = "demo.gateway_client.GatewayUnavailable"
TRACEBACK = """Traceback (most recent call last):
  File "/srv/shop/.venv/lib/python3.12/site-packages/celery/app/trace.py", line 453, in trace_task
    R = retval = fun(*args, **kwargs)
  File "/srv/shop/demo/tasks.py", line 64, in charge_payment
    gateway.charge(payment.order_id, payment.amount_cents)
  File "/srv/shop/demo/gateway_client.py", line 41, in charge
    raise GatewayUnavailable(f"{response.status_code} from {self.url}")
demo.gateway_client.GatewayUnavailable: 503 Service Unavailable from http://gateway.internal:8025/charge"""


def job(task_id, task_name, state, at, **fields):
    """An unsaved JobExecution with the times and worker its state implies."""
    values = {"queue": "celery", "enqueued_at": at, "updated_at": at, "args": [1], "kwargs": {},
              "payload_complete": True}
    if state not in ("enqueued", "waiting"):
        values.update(received_at=at + timedelta(seconds=0.4), started_at=at + timedelta(seconds=0.5),
                      worker="celery@worker-1", worker_pid=4102)
    if state in ("succeeded", "failed"):
        values.update(finished_at=at + timedelta(seconds=0.9), runtime=0.4)
    values.update(fields)
    return JobExecution(task_id=task_id, task_name=task_name, state=state, **values)


def seed_dashboard(now=None):
    """Rows for every page to show something; returns the ids the tests open."""
    now = now or timezone.now()
    rng = random.Random(2026)
    seed_tallies(now, rng)
    seed_samples(now, rng)
    failed_charge = seed_jobs(now, rng)
    seed_processes(now)
    seed_circuits(now)
    storm = seed_findings(now)
    action = ActionLog.objects.create(
        at=now - timedelta(minutes=30), finished_at=now - timedelta(minutes=30), username="oncall", surface="dashboard",
        action="purge_messages", target="queue payments", parameters={"task": "demo.tasks.noop"}, outcome="succeeded",
        matched=2, succeeded=2)
    ArchivedMessage.objects.bulk_create([
        ArchivedMessage(action=action, archived_at=now - timedelta(minutes=30), broker="redis", queue="payments",
                        task_id=f"noop-{n}", task_name="demo.tasks.noop", raw="{}", size=812,
                        removed_at=now - timedelta(minutes=30))
        for n in range(2)])
    return {"job": failed_charge, "finding": storm.pk, "action": action.pk}


OUTAGE = range(18, 27)  # minutes ago: the payment gateway was down


def seed_tallies(now, rng):
    """An hour of per-minute counts: steady customer jobs, and charges failing during the outage."""
    minute = now.replace(second=0, microsecond=0)
    tallies = []
    for ago in range(60):
        at = minute - timedelta(minutes=ago)
        charged = 0 if ago in OUTAGE else rng.randint(6, 11)
        tallies += [
            JobTally(minute=at, metric="succeeded", task_name=CRM, queue="celery", count=rng.randint(30, 42), runtime_sum=9),
            JobTally(minute=at, metric="succeeded", task_name=SEGMENTS, queue="celery", count=rng.randint(30, 42), runtime_sum=4),
            JobTally(minute=at, metric="succeeded", task_name=CONFIRMATION, queue="mail", count=rng.randint(8, 14), runtime_sum=2),
            JobTally(minute=at, metric="succeeded", task_name=CHARGE, queue="payments", count=charged, runtime_sum=charged * .3),
        ]
        if ago in OUTAGE:
            tallies.append(JobTally(minute=at, metric="failed", task_name=CHARGE, queue="payments", exception=GATEWAY_ERROR,
                                    count=rng.randint(3, 6)))
        if ago % 7 == 0:
            tallies.append(JobTally(minute=at, metric="failed", task_name=INVENTORY, queue="celery",
                                    exception="demo.models.Order.DoesNotExist", count=rng.randint(1, 3)))
    JobTally.objects.bulk_create(tallies)


def seed_samples(now, rng):
    """Three queues sampled every 15 s for an hour; payments backs up behind the gateway."""
    samples = []
    for step in range(240):
        at = now - timedelta(seconds=15 * step)
        ago = step // 4
        if ago in OUTAGE:  # jobs piled up until the gateway came back
            payments = {"depth": 40 + 6 * (26 - ago), "oldest_age": 90 + 20 * (26 - ago), "drains_per_minute": 3}
        elif step < 5:  # the circuit opened 75 s ago: charges wait again
            payments = {"depth": 4 + 3 * (5 - step), "oldest_age": 15.0 * (5 - step), "drains_per_minute": 2}
        else:
            payments = {"depth": rng.randint(0, 3), "oldest_age": 1.5, "drains_per_minute": 9}
        samples += [
            QueueSample(queue="celery", sampled_at=at, broker="redis", depth=rng.randint(0, 25), in_flight=rng.randint(2, 8),
                        consumers=1, workers=["celery@worker-1"], oldest_age=rng.uniform(0.5, 4), arrivals_per_minute=95,
                        drains_per_minute=96),
            QueueSample(queue="payments", sampled_at=at, broker="redis", in_flight=1, consumers=1, workers=["celery@worker-1"],
                        arrivals_per_minute=9, **payments),
            QueueSample(queue="mail", sampled_at=at, broker="redis", depth=rng.randint(0, 4), in_flight=0, consumers=1,
                        workers=["celery@worker-2"], oldest_age=rng.uniform(0.2, 2), arrivals_per_minute=11,
                        drains_per_minute=11),
        ]
    QueueSample.objects.bulk_create(samples)


def seed_jobs(now, rng):
    """Page views' jobs, a failed charge (returned: its id), an orphan, charges waiting on the
    circuit and jobs running on two workers."""
    def task_id():
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))

    jobs = []
    for n in range(5):  # page views: each save of last_seen_at enqueues two jobs
        at = now - timedelta(seconds=520 * (5 - n))
        for task in (CRM, SEGMENTS):
            jobs.append(job(task_id(), task, "succeeded", at, args=[100 + n], origin_kind="save", origin_model="demo.Customer",
                            origin_pk=str(100 + n), origin_save=f"save-{n}", origin_created=False,
                            origin_update_fields=["last_seen_at"], origin_receiver=f"demo.receivers.{task.rsplit('.', 1)[1]}",
                            origin_request="GET /shop/"))
    failed_charge = task_id()
    jobs.append(job(failed_charge, CHARGE, "failed", now - timedelta(minutes=20), queue="payments", args=[5120], retries=3,
                    exception_type=GATEWAY_ERROR, circuit="payment-gateway",
                    exception_message="503 Service Unavailable from http://gateway.internal:8025/charge", traceback=TRACEBACK,
                    origin_kind="save", origin_model="demo.Payment", origin_pk="5120", origin_created=True,
                    origin_receiver="demo.receivers.charge_payment", origin_in_atomic=True, origin_deferred="on_commit",
                    origin_committed_at=now - timedelta(minutes=20), origin_request="POST /shop/checkout/",
                    origin_save="save-pay"))
    jobs.append(job("orphan-1", INVENTORY, "failed", now - timedelta(minutes=14), args=[9041],
                    exception_type="demo.models.Order.DoesNotExist", exception_message="Order matching query does not exist.",
                    origin_kind="save", origin_model="demo.Order", origin_pk="9041", origin_created=True,
                    origin_receiver="demo.receivers.reserve_inventory", origin_in_atomic=True))
    for n in range(4):
        jobs.append(job(f"waiting-{n}", CHARGE, "waiting", now - timedelta(seconds=40 + 10 * n), queue="payments",
                        args=[5130 + n], circuit="payment-gateway", circuit_waits=n + 1, eta=now + timedelta(seconds=20)))
    jobs.append(job("running-1", WAREHOUSE, "started", now - timedelta(seconds=8), args=[9050]))
    jobs.append(job("running-2", CONFIRMATION, "started", now - timedelta(minutes=12), queue="mail", args=[9012],
                    worker="celery@worker-2", worker_pid=4230))
    JobExecution.objects.bulk_create(jobs)
    with connection.cursor() as cursor:  # the statistics autovacuum would have gathered (the list's estimated count)
        cursor.execute(f"ANALYZE {JobExecution._meta.db_table}")
    return failed_charge


def seed_processes(now):
    """Two workers (the second silent for 11 minutes, a job still on it), a web process, and beat's
    periodic tasks running on time."""
    RecorderProcess.objects.bulk_create([
        RecorderProcess(hostname="worker-1", pid=4101, process_started_at=now - timedelta(hours=5), program="celery worker",
                        events_recorded=48_210, last_flush_at=now, node="celery@worker-1", queues=["celery", "payments"]),
        RecorderProcess(hostname="worker-1", pid=4102, process_started_at=now - timedelta(hours=5),
                        program="celery worker (child)", events_recorded=23_950, last_flush_at=now, node="celery@worker-1"),
        RecorderProcess(hostname="worker-2", pid=4229, process_started_at=now - timedelta(hours=3), program="celery worker",
                        events_recorded=6_112, last_flush_at=now - timedelta(minutes=11), node="celery@worker-2",
                        queues=["mail"]),
        RecorderProcess(hostname="web-1", pid=880, process_started_at=now - timedelta(hours=6), program="gunicorn",
                        events_recorded=31_004, last_flush_at=now),
    ])
    MonitorHeartbeat.objects.bulk_create([
        MonitorHeartbeat(task=task, first_run_at=now - timedelta(hours=5), last_run_at=now - timedelta(seconds=4),
                         last_duration=0.08, runs=600) for task in WATCHED])


def seed_circuits(now):
    opened = now - timedelta(seconds=75)
    actor = "worker-1 pid 4102 (demo.tasks.charge_payment)"
    Circuit.objects.create(name="payment-gateway", state="open", changed_at=opened, opened_at=opened, consecutive_failures=3,
                           open_count=2, last_error_type=GATEWAY_ERROR,
                           last_error="503 Service Unavailable from http://gateway.internal:8025/charge",
                           last_failure_at=opened, window=[[now.timestamp() - 20, 14, 9]],
                           policy={"fail_max": 3, "reset_timeout": 30, "window": 60})
    Circuit.objects.create(name="crm-api", state="closed", changed_at=now - timedelta(hours=2),
                           window=[[now.timestamp() - 20, 40, 1]], last_success_at=now,
                           policy={"fail_max": 5, "reset_timeout": 60, "window": 60})
    CircuitEvent.objects.bulk_create([
        CircuitEvent(circuit="payment-gateway", at=now - timedelta(minutes=27), from_state="closed", to_state="open",
                     cause="3 consecutive failures", actor=actor, consecutive_failures=3, error_type=GATEWAY_ERROR),
        CircuitEvent(circuit="payment-gateway", at=now - timedelta(minutes=17), from_state="half_open", to_state="closed",
                     cause="2 trial calls succeeded"),
        CircuitEvent(circuit="payment-gateway", at=opened, from_state="closed", to_state="open", cause="3 consecutive failures",
                     actor=actor, consecutive_failures=3, error_type=GATEWAY_ERROR),
    ])


def seed_findings(now):
    """One open finding of each detector, and an incident for the storm (returned)."""
    def finding(**fields):
        return Finding.objects.create(fingerprint=f"{fields['kind']}:{fields['subject']}", first_seen=now - timedelta(minutes=9),
                                      last_seen=now - timedelta(seconds=5), **fields)

    storm = finding(detector="fanout", kind="fanout_storm", subject="demo.Customer:demo.receivers.sync_customer_to_crm",
                    severity="warning", count=1840,
                    title="Enqueue storm: demo.Customer saves → sync_customer_to_crm at 12× its usual rate",
                    explanation="Every save of a Customer enqueues this task, even a save that only touches last_seen_at. "
                                "Skip the enqueue when update_fields holds only bookkeeping fields.",
                    evidence={"rate_per_minute": 368, "baseline_per_minute": 31, "enqueues_per_save": 3.0,
                              "update_fields": {"last_seen_at": 1840}})
    finding(detector="circuits", kind="circuit_open", subject="payment-gateway", severity="critical", count=4,
            title="Circuit payment-gateway is open: 4 jobs waiting",
            explanation="The payment gateway answered 503 three times in a row; jobs that call it wait instead of failing.",
            evidence={"jobs_waiting": 4, "last_error": "503 Service Unavailable", "queues": {"payments": 4}})
    finding(detector="orphans", kind="orphaned_jobs", subject=f"{INVENTORY}:rolled_back", severity="warning", count=1,
            title="1 orphaned reserve_inventory job: its order was rolled back",
            explanation="The job was enqueued inside the order's transaction, which then rolled back. Enqueue with "
                        "transaction.on_commit (or delay_on_commit) instead.",
            evidence={"cause": "rolled_back", "jobs": 1, "where": {"failed": 1}, "missing_records": {"demo.Order": [9041]},
                      "enqueued_by": {"demo.receivers.reserve_inventory": 1}, "job_ids": ["orphan-1"]})
    finding(detector="backlog", kind="queue_oldest_age", subject="payments", severity="warning", count=19,
            title="Queue payments: oldest job waiting 75 s", explanation="Jobs wait behind the open payment-gateway circuit.",
            evidence={"oldest_age": 75, "depth": 19})
    Incident.objects.create(fingerprint=storm.fingerprint, finding=storm, kind=storm.kind, subject=storm.subject,
                            severity="warning", title=storm.title, state="open", opened_at=now - timedelta(minutes=8),
                            notified_at=now - timedelta(minutes=8), last_notified_at=now - timedelta(minutes=8))
    return storm
