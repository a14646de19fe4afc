"""One scenario of benchmarks/signal_scorecard.py, in a process of its own (Django is set up once per process,
and each scenario has its own database).

    python -m benchmarks.signal_run NAME --result FILE --scratch DIR

The database (DATABASE_URL) and the broker (CELERY_BROKER_URL) are fresh, made by the caller.
This process creates the shop's customers, a webhook channel pointing at a receiver it serves and
the demo payment gateway (up, or down for circuit_open), starts a real worker with beat at
Jobwatch's default intervals, plants the fault, watches what Jobwatch finds, opens and sends, and
writes the scenario's figures as JSON to FILE. Progress goes to stderr; what Jobwatch said, to
stdout.
"""

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Watch until the right incident's first notification (at most this long after the fault began),
# then this much longer to catch whatever else is sent.
PAGE_CAP_SECONDS = 150
AFTER_PAGE_SECONDS = 45
POLL_SECONDS = 2
WORKER_READY_SECONDS = 90


class Clock:
    """Seconds since the fault began, for progress lines."""

    def __init__(self):
        self.fault_started = time.time()

    def say(self, message):
        offset = time.time() - self.fault_started
        print(f"  [{time.strftime('%H:%M:%S')} {offset:+6.1f} s] {message}", file=sys.stderr, flush=True)


# -- the webhook receiver ------------------------------------------------------------------------


class Receiver(ThreadingHTTPServer):
    """The webhook channel's other end: keeps every notification with the time it arrived."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), ReceiverHandler)
        self.received = []  # (arrival, payload)
        self.lock = threading.Lock()
        threading.Thread(target=self.serve_forever, name="webhook-receiver", daemon=True).start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}/hook"

    def notifications(self):
        with self.lock:
            return list(self.received)


class ReceiverHandler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        with self.server.lock:
            self.server.received.append((time.time(), body))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


# -- the worker ----------------------------------------------------------------------------------


class Worker:
    """`celery -A dashboard worker -B` (beat inside it, at Jobwatch's default intervals), prefork,
    concurrency 2, consuming "celery", in a session of its own: stopped, and its group killed, by
    its own id. Its pid is written to a file so that the caller can kill the group if this
    process dies first."""

    def __init__(self, name, scratch, env):
        self.log_path = scratch / f"worker-{name}.log"
        self.pid_path = scratch / f"worker-{name}.pid"
        self.command = [
            sys.executable, "-m", "celery", "-A", "dashboard", "worker", "-B", "-s", str(scratch / f"beat-{name}.schedule"),
            "-P", "prefork", "-c", "2", "-Q", "celery", "-n", f"signal-{name}@%h", "-l", "info",
            "--without-mingle", "--without-gossip",
        ]
        self.env = env
        self.process = None

    def start(self):
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(self.command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        self.pid_path.write_text(str(self.process.pid))
        deadline = time.monotonic() + WORKER_READY_SECONDS
        while " ready." not in self.log():
            self.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"the worker was not ready within {WORKER_READY_SECONDS} s:\n{self.log()[-3000:]}")
            time.sleep(0.2)

    def log(self):
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def check_alive(self):
        if self.process.poll() is not None:
            raise RuntimeError(f"the worker exited with status {self.process.returncode}:\n{self.log()[-3000:]}")

    def stop(self):
        """Warm shutdown (the recorder flushes), then SIGKILL to whatever of its group is left."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                pass
        kill_group(self.process.pid)
        self.process.wait()
        self.pid_path.unlink(missing_ok=True)


def kill_group(pid):
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# -- one run -------------------------------------------------------------------------------------


class ScenarioRun:
    """Everything one scenario starts, kept so that all of it is stopped whatever happens."""

    def __init__(self, scenario, scratch):
        self.scenario = scenario
        self.scratch = scratch
        self.stop_planting = threading.Event()
        self.clock = Clock()
        self.receiver = self.gateway = self.partner = self.worker = self.planting = None
        self.stage = None
        self.plant_error = None
        self.plant_finished_at = None
        self.notices_said = 0

    def prepare(self):
        from celery.signals import after_task_publish

        from benchmarks.signal_scenarios import CUSTOMERS, FailingService, Stage
        from demo.gateway import start as start_gateway
        from demo.models import Customer
        from demo.workload import Shop
        from monitors.models import NotificationChannel

        # bulk_create sends no post_save: the shop has customers and no job was enqueued yet.
        Customer.objects.bulk_create(
            Customer(name=f"Customer {n}", email=f"customer{n}@example.com", tier="standard") for n in range(CUSTOMERS))
        self.receiver = Receiver()
        NotificationChannel.objects.create(name="signal webhook", kind="webhook", target=self.receiver.url)
        self.gateway = start_gateway(port=0, up=self.scenario.gateway_up)
        self.partner = FailingService()
        self.stage = Stage(self.scenario.name, Shop(random.Random(f"signal:{self.scenario.name}")), self.stop_planting,
                           partner_url=self.partner.url, customer_ids=list(Customer.objects.values_list("pk", flat=True)))
        after_task_publish.connect(self.note_published, weak=False)

    def note_published(self, sender=None, headers=None, body=None, **kwargs):
        task_id = (headers or {}).get("id") or (body.get("id") if isinstance(body, dict) else None)  # protocol 2, or 1
        self.stage.published.append((sender, task_id))

    def start_worker(self):
        env = {**os.environ, "DEMO_GATEWAY_URL": self.gateway.url}
        self.worker = Worker(self.scenario.name, self.scratch, env)
        self.worker.start()

    def start_fault(self):
        self.clock = Clock()
        self.planting = threading.Thread(target=self.plant, name=f"plant-{self.scenario.name}", daemon=True)
        self.planting.start()

    def plant(self):
        from django.db import connections

        try:
            self.scenario.plant(self.stage)
        except Exception as error:  # noqa: BLE001 (reported in the figures: a fault not planted measures nothing)
            self.plant_error = f"{type(error).__name__}: {error}"
        finally:
            self.plant_finished_at = time.time()
            connections.close_all()

    def watch(self):
        """Poll until the scenario has been watched long enough; say what Jobwatch does meanwhile."""
        seen_findings, seen_incidents = {}, {}
        page_at = None
        while True:
            self.worker.check_alive()
            self.say_changes(seen_findings, seen_incidents)
            page_at = page_at or self.right_page_at()
            if time.time() >= self.watch_ends(page_at):
                return
            time.sleep(POLL_SECONDS)

    def right_page_at(self):
        """When the right incident was paged (a fault), or opened (a smell, which is never paged)."""
        from benchmarks.signal_score import right_incidents

        right = right_incidents(self.scenario, self.stage)
        if not self.scenario.paged:
            return min((incident.notified_at.timestamp() for incident in right if incident.notified_at), default=None)
        pks = {incident.pk for incident in right}
        return min((arrival for arrival, payload in self.receiver.notifications() if payload.get("incident") in pks), default=None)

    def watch_ends(self, page_at):
        started = self.clock.fault_started
        if self.scenario.observe_seconds:
            return started + self.scenario.observe_seconds
        planted = self.plant_finished_at or float("inf")
        return max(min(page_at or float("inf"), started + PAGE_CAP_SECONDS) + AFTER_PAGE_SECONDS, planted + 5)

    def say_changes(self, seen_findings, seen_incidents):
        from monitors.models import Finding, Incident

        for finding in Finding.objects.order_by("pk"):
            before = seen_findings.get(finding.pk)
            if before is None:
                self.clock.say(f"finding #{finding.pk} opened [{finding.severity}] {finding.kind}: {finding.title}")
            elif before != finding.status:
                self.clock.say(f"finding #{finding.pk} {finding.status}: {finding.title}")
            seen_findings[finding.pk] = finding.status
        for incident in Incident.objects.order_by("pk"):
            before = seen_incidents.get(incident.pk)
            if before != incident.state:
                change = "new" if before is None else f"{before} →"
                self.clock.say(f"incident #{incident.pk} {change} {incident.state} [{incident.severity}]: {incident.title}")
            seen_incidents[incident.pk] = incident.state
        notices = self.receiver.notifications()
        for _, payload in notices[self.notices_said:]:
            self.clock.say(f"NOTIFIED {payload.get('event')} [{payload.get('severity')}] {payload.get('title')} "
                           f"(incident #{payload.get('incident')})")
        self.notices_said = len(notices)

    def close(self):
        self.stop_planting.set()
        if self.planting is not None:
            self.planting.join(30)
        for stop in (self.worker and self.worker.stop, self.gateway and self.gateway.stop,
                     self.partner and self.partner.shutdown, self.receiver and self.receiver.shutdown):
            if stop:
                try:
                    stop()
                except Exception as error:  # noqa: BLE001 (stop the rest whatever one of them does)
                    print(f"  could not stop cleanly: {error!r}", file=sys.stderr)


# -- main ----------------------------------------------------------------------------------------


def interrupted(signum, frame):
    raise KeyboardInterrupt  # `kill` stops the worker too, as Ctrl-C does


def run(name, scratch):
    import django

    django.setup()
    from benchmarks.signal_scenarios import BY_NAME
    from benchmarks.signal_score import report, score

    scenario = BY_NAME[name]
    scenario_run = ScenarioRun(scenario, scratch)
    try:
        scenario_run.prepare()
        scenario_run.clock.say(f"{name}: starting a worker with beat (default intervals)")
        scenario_run.start_worker()
        scenario_run.start_fault()
        scenario_run.clock.say(f"{name}: fault started: {scenario.fault}")
        scenario_run.watch()
        scenario_run.stop_planting.set()
        scenario_run.planting.join(30)
        figures = score(scenario, scenario_run.stage, scenario_run.receiver.notifications(), scenario_run.clock.fault_started)
    finally:
        # A second Ctrl-C must not cut the clean-up short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        scenario_run.close()
    if scenario_run.plant_error:
        figures["error"] = f"the fault could not be planted: {scenario_run.plant_error}"
    figures["observed_s"] = round(time.time() - scenario_run.clock.fault_started, 1)
    print(report(scenario, figures), flush=True)
    return figures


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenario")
    parser.add_argument("--result", required=True, help="file the scenario's figures are written to, as JSON")
    parser.add_argument("--scratch", required=True, help="folder for the worker's log, pid and beat schedule")
    arguments = parser.parse_args()
    signal.signal(signal.SIGTERM, interrupted)
    try:
        figures = run(arguments.scenario, Path(arguments.scratch))
    except KeyboardInterrupt:
        return 130
    except Exception as error:  # noqa: BLE001 (the benchmark could not measure: say why, and let the others run)
        traceback.print_exc()
        Path(arguments.result).write_text(json.dumps({"error": f"{type(error).__name__}: {error}"[:3000]}))
        return 1
    Path(arguments.result).write_text(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
