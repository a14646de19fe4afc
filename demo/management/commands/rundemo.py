"""Run the whole embedded-default demo as one command: gateway, worker, beat, web server and the
shop's workload, supervised together (see demo/processes.py)."""

import os
import re
import signal
import socket
import sys
import time

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError

from demo.management.commands.demo_gateway import configured_port
from demo.processes import Supervisor

# The login bin/demo creates; rundemo only checks that it exists.
DEMO_USERNAME, DEMO_PASSWORD = "demo", "demo"
STOP_GRACE_SECONDS = 10.0
# Mild trouble on a 90-second cycle, so the dashboard has something to show within a minute:
# rollbacks and deletions from the start, a storm at 30 s and a gateway outage at 45 s of each cycle.
DEMO_TROUBLE = [
    "--cycle", "90", "--storm", "20", "--gateway-outage", "30",
    "--rollbacks", "0.05", "--deletions", "0.05", "--bulk", "20", "--bulk-every", "45",
]


class Command(BaseCommand):
    help = (
        "Start the Jobwatch demo: the demo payment gateway, a Celery worker and beat, the web server "
        "and the shop's workload, each as a child process with its output prefixed by its name. "
        "Ctrl-C stops them all; if one dies, the others are stopped and the command fails naming it."
    )

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=8000, help="port of the web server on 127.0.0.1 (default 8000)")
        parser.add_argument(
            "--rate", type=float, default=5.0, help="the workload's actions per second in normal times (default 5)"
        )
        parser.add_argument(
            "--verbose", action="store_true",
            help="print everything: a line per job from the worker, every task beat sends and every page "
                 "request. By default only Jobwatch's own lines, the notifications it sends, the workload's "
                 "and the gateway's events, and warnings and errors are printed.",
        )
        parser.add_argument(
            "--worker-log-level", default=None,
            help="the Celery worker's log level (default warning, or info with --verbose: a line per job)",
        )

    def handle(self, port, rate, worker_log_level, verbose=False, **options):
        if rate <= 0:
            raise CommandError("--rate must be above 0.")
        gateway_port = configured_port()
        if port == gateway_port:
            raise CommandError(f"Port {port} is the demo gateway's (DEMO_GATEWAY_URL): choose another --port.")
        refuse_busy_port(port, "the web server", "--port")
        refuse_busy_port(gateway_port, "the demo gateway", "DEMO_GATEWAY_URL")
        url = f"http://127.0.0.1:{port}/"
        login = demo_login_hint()

        # Alerts go to an email channel; without SMTP_HOST the mail is printed in the worker's output,
        # so the demo's incidents (the gateway outage, the storm) are seen being notified.
        # The shop's own periodic tasks too (dashboard/settings.py), in beat and on the pages.
        env = {"JOBWATCH_ALERT_EMAILS": "oncall@example.com", "DEMO_BEAT_SCHEDULE": "1", **os.environ, "PYTHONUNBUFFERED": "1"}
        supervisor = Supervisor("rundemo", cwd=settings.BASE_DIR, env=env)
        stop_requests = []
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, lambda signum, frame: stop_requests.append(signum))

        supervisor.say(f"Jobwatch demo: open {url}  log in as {login}  stop with Ctrl-C")
        exited = None
        try:
            quiet = quiet_filters()
            for name, argv in demo_programs(port, gateway_port, rate, worker_log_level or ("info" if verbose else "warning"),
                                            verbose):
                supervisor.start(name, argv, hide=None if verbose else quiet.get(name))
            exited = self.watch(supervisor, stop_requests, port, f"Jobwatch is up: open {url} and log in as {login}")
        finally:
            supervisor.say(f"stopping everything (up to {STOP_GRACE_SECONDS:g} s; Ctrl-C again to kill at once)")
            requests_so_far = len(stop_requests)
            killed = supervisor.stop_all(STOP_GRACE_SECONDS, hurry=lambda: len(stop_requests) > requests_so_far)
            if killed:
                supervisor.say(f"killed after the grace period: {', '.join(killed)}")
        if exited is not None:
            raise CommandError(f"{exited.name} {describe_exit(exited.process.returncode)}, so the demo was stopped.")
        supervisor.say("stopped")

    def watch(self, supervisor, stop_requests, port, ready_message):
        """Wait for Ctrl-C or for a child to exit (returned); say when the web server answers."""
        announced_ready = False
        while not stop_requests:
            exited = supervisor.first_to_exit()
            if exited is not None:
                supervisor.say(f"{exited.name} {describe_exit(exited.process.returncode)}; stopping the others")
                return exited
            if not announced_ready and accepts_connections(port):
                supervisor.say(ready_message)
                announced_ready = True
            time.sleep(0.2)
        return None


# Lines hidden by default, per program: the web server's request log (every htmx poll is one),
# except for server errors; the worker's line and traceback for each job the demo makes fail on
# purpose (Jobwatch records them: they are on the Failures page). Per-job and per-send lines at
# INFO are kept out by the log levels instead.
REQUEST_LINE = re.compile(r'"[A-Z]+ \S+ HTTP/[\d.]+" ([1-4]\d\d) ')
TASK_LINE = re.compile(r"\] Task [\w.]+\[[0-9a-f-]+\] (raised unexpected|retry)")
TRANSPORT_NOISE = "No hostname was supplied. Reverting to default 'localhost'"


class JobTracebacks:
    """A filter of a worker's output: drops Celery's line for a failed or retried job and the
    traceback that follows it, up to and including the exception's own line."""

    def __init__(self):
        self.in_traceback = False
        self.hid_last = False

    def __call__(self, line):
        self.hid_last = self.hides(line) or (self.hid_last and not line.strip())  # and the blank lines after
        return self.hid_last

    def hides(self, line):
        if TASK_LINE.search(line) or TRANSPORT_NOISE in line:
            return True
        if line.startswith(("Traceback (most recent call last):", "During handling of the above exception",
                            "The above exception was the direct cause")):
            self.in_traceback = True
            return True
        if self.in_traceback:
            if not line.strip() or line[0].isspace() or line.lstrip().startswith("^"):
                return True
            self.in_traceback = False
            return True  # the exception's line ends the traceback
        return False


def quiet_filters():
    return {"web": lambda line: REQUEST_LINE.search(line) is not None, "worker": JobTracebacks()}


def demo_programs(port, gateway_port, rate, worker_log_level, verbose=False):
    """(name, argv) of each program, in start order; the workload last, so the gateway it switches
    and the worker that runs its jobs are already starting. Jobwatch's own lines (the "monitors"
    logger has a handler of its own) and the notifications (printed mail) show at any level."""
    python, manage = sys.executable, str(settings.BASE_DIR / "manage.py")
    return [
        ("gateway", [python, manage, "demo_gateway", "--port", str(gateway_port)]),
        ("worker", [python, "-m", "celery", "-A", "dashboard", "worker", "-l", worker_log_level, "-c", "2"]),
        ("beat", [python, "-m", "celery", "-A", "dashboard", "beat", "-l", "info" if verbose else "warning"]),
        ("web", [python, manage, "runserver", f"127.0.0.1:{port}", "--noreload"]),
        ("workload", [python, manage, "demo_workload", "--rate", f"{rate:g}", "--duration", "0", *DEMO_TROUBLE]),
    ]


def demo_login_hint():
    try:
        exists = get_user_model().objects.filter(username=DEMO_USERNAME).exists()
    except DatabaseError as error:
        raise CommandError(f"The database is not ready ({error}); run bin/demo, or manage.py migrate first.") from None
    if exists:
        return f"{DEMO_USERNAME} / {DEMO_PASSWORD}"
    return "a superuser of yours (bin/demo creates demo / demo)"


def refuse_busy_port(port, user, setting_name):
    if accepts_connections(port):
        raise CommandError(
            f"Port {port}, for {user}, is already in use (another rundemo?). "
            f"Stop that, or choose another port with {setting_name}."
        )


def accepts_connections(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def describe_exit(returncode):
    if returncode < 0:
        return f"was killed by signal {signal.Signals(-returncode).name}"
    return f"exited unexpectedly with code {returncode}"
