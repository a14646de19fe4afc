"""The demo's incidents: does `bin/demo` ever show more active incidents than problems it planted?

    .venv/bin/python -m benchmarks.demo_incidents                      # 10 minutes, ~11 min in all
    .venv/bin/python -m benchmarks.demo_incidents --screenshots        # and the README's docs/screenshots/*.png
    .venv/bin/python -m benchmarks.demo_incidents --minutes 3 --keep   # keep the demo's var dir to look at

(From the repository root; `.venv/bin/python benchmarks/demo_incidents.py` works too.)

What it runs: exactly what `bin/demo` runs — `manage.py migrate`, the demo / demo superuser made the
way bin/demo makes it, then `manage.py rundemo --port <a free port>` (gateway, a Celery worker,
beat, runserver and `demo_workload` with rundemo's DEMO_TROUBLE) — on the embedded default (SQLite
and the filesystem broker) in a fresh JOBWATCH_VAR_DIR (a temporary folder), with the demo's own
settings and intervals. The only setting it may change is DEMO_GATEWAY_URL, and only when the
gateway's usual port 8765 is taken (it is then in the JSON's `settings_changed`). Variables of the
caller's shell that would change what is measured (CELERY_*, JOBWATCH_*, DJANGO_*, DATABASE_URL,
DEMO_*, DEBUG, SMTP_*) are not passed on.

Every 15 s it reads the demo's SQLite database (read-only, with sqlite3) and records the active
incidents (pending, open or resolving: `merged` and `dismissed` are not active) — how many, by
severity, their titles —, the open findings and the notifications sent so far. At the end it
prints a per-minute table and, last, one line of JSON. rundemo runs as a child in a session of its
own; on exit, Ctrl-C, SIGTERM or an error it gets SIGINT (it stops its children in its own way),
then, after a grace, its process group and every process that carries this run's
JOBWATCH_VAR_DIR in its environment (the worker's pool processes, beat, the web server…) are
killed; the JSON says how many were left (`processes_left`, 0 when all is well).

With --screenshots, while the demo still runs, late in the run and in a cycle's trouble (the
gateway outage, once its circuit is open and its critical incident active — the storm's has
opened by then —, and before the circuit's cool-down ends), Debian's Chromium (Playwright; the
launch arguments of tests/browser.py) logs in through /accounts/login/ as demo / demo and takes
full-page screenshots, 1280 px wide and cut at 2,400 px, of the pages the README shows into
docs/screenshots/: Circuits, Overview, Alerts, Fan-out, Failures, the failed jobs, the busiest
queue, the newest failed job that names the service it came from, and the speed page of the task
whose runtimes spread the most. A page that does not answer
200 at its own address is not saved (the JSON's `screenshots.failed` names it).

## The target, and the problems the demo plants: 6

The demo's 10-minute run never holds more active incidents than problems it planted. With
rundemo's DEMO_TROUBLE (`--cycle 90 --storm 20 --gateway-outage 30 --rollbacks 0.05 --deletions
0.05 --bulk 20 --bulk-every 45`), demo/workload.py, demo/receivers.py and the shop's beat schedule
(dashboard/settings.py, which rundemo turns on) plant six problems:

1. **The save storm** (Customer saves). `Shop.record_visit` saves a Customer with
   `update_fields=["last_seen_at"]`, and every Customer save sets off three receivers
   (`sync_customer_to_crm`, `refresh_customer_segments`, `reindex_customer`), each a job; for 20 s
   of each 90-s cycle visits come at STORM_FACTOR (10) times their rate. The trivial saves and the
   duplicate enqueues (the same customer's job enqueued again) are the same problem — the same
   Customer receivers firing on saves that change nothing the jobs need; one fix (enqueue only when
   a needed field changed) ends all three.
2. **Orders rolled back** (orphaned `reserve_inventory` jobs). `Shop.place_order(roll_back=True)`
   (5 % of orders) raises inside the order's transaction after the Order is saved; the
   `reserve_inventory` receiver enqueues with plain `.delay()` inside the transaction, so its job
   points at an order that never existed (the confirmation is `delay_on_commit` and the charge is
   `on_commit`: rolled back with it, no job). The receiver "enqueues inside a transaction" and jobs
   that "ran before commit" are this same defect. (On SQLite a rolled-back insert gives its primary
   key back: the next order takes it, so the orphan's order "exists" again by the time the detector
   looks, and the same reserve_inventory(pk) is enqueued twice.)
3. **Orders deleted after commit** (orphaned jobs of the order's tasks).
   `Shop.place_order(delete_after_commit=True)` (5 % of the rest) deletes the committed Order (its
   Payment goes with it) before the workers run `send_order_confirmation`, `reserve_inventory` and
   `charge_payment` — and `notify_warehouse` if `ship_order` picked that order: one act, every job
   of the order orphaned.
4. **The payment gateway outage**. The workload tells the demo gateway to refuse calls for 30 s of
   each cycle; `charge_payment` calls it through the `payment-gateway` circuit (which opens, and
   charge jobs wait), and `notify_warehouse` calls the same server without a breaker (its jobs
   fail). One server down: one problem, whichever job notices.
5. **The bulk loop**. Every 45 s `Shop.retier_customers(20)` saves 20 customers one by one in one
   transaction, each save firing the three Customer receivers (60 jobs); two of them enqueue inside
   that transaction. Its fix (bulk_update and one batch job) differs from the storm's, so it is a
   problem of its own, even though it shares the Customer receivers with problem 1.

6. **The partner's stock feed down**. The periodic task `partner stock import` (every minute,
   `demo.tasks.import_partner_stock`) connects to a partner feed that refuses connections for
   minutes 5–11 of every 20 by the clock: its runs fail (a periodic task failing its last runs;
   the service it calls failing). In a 10-minute run it may come once or not at all.

Nothing else in the demo is planted to go wrong: sign-ups, the other orders and shipments outside
the outage are the healthy shop, and a finding about them would be a false one. 6 is therefore the
most incidents the demo should ever show at once (fewer is fine: the problems come and go in the
cycle, and Jobwatch may rightly see the storm and the bulk loop, both Customer saves, as one).
One side effect is not planted but real: `Shop.ship_order` ships the latest order, so with no new
order between two shipments the warehouse is told twice about one order — a true, info-level
duplicate of notify_warehouse. It is not counted as a seventh problem (nothing in DEMO_TROUBLE asks
for it), so an incident of its own takes one of the six places.

Exit status: non-zero only when the benchmark could not measure (the demo would not start, or died),
never for a missed target.
"""

# Run as a script: the repository, not this folder, is where `benchmarks.*` and the site import from.
import os
import sys

_HERE = os.path.dirname(os.path.realpath(__file__))
sys.path[:] = [entry for entry in sys.path if os.path.realpath(entry or os.curdir) != _HERE]
sys.path.insert(0, os.path.dirname(_HERE))

import argparse
import json
import platform
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlencode, urlsplit

ROOT = Path(_HERE).parent
SCREENSHOT_DIR = ROOT / "docs" / "screenshots"
PLANTED_PROBLEMS = 6
SAMPLE_SECONDS = 15.0
# rundemo stops its children with a 10-s grace of its own (STOP_GRACE_SECONDS); then a little more.
STOP_GRACE_SECONDS = 20.0
# Variables a caller's shell may set that would change what is measured.
INHERITED_PREFIXES = ("CELERY_", "JOBWATCH_", "DJANGO_", "DATABASE_URL", "DEMO_", "DEBUG", "SMTP_")
DEFAULT_GATEWAY_PORT = 8765
ACTIVE_STATES = ("pending", "open", "resolving")
PAGING = ("warning", "critical")
SEVERITIES = ("critical", "warning", "info")
# The same user bin/demo creates, made the same way.
CREATE_DEMO_USER = '''
from django.contrib.auth import get_user_model

user, _ = get_user_model().objects.get_or_create(username="demo", defaults={"email": "demo@example.com"})
user.is_active = user.is_staff = user.is_superuser = True
user.set_password("demo")
user.save()
'''
# Screenshots: tests/browser.py's Chromium, arguments, width and height cap.
CHROMIUM = os.environ.get("JOBWATCH_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1280, "height": 900}
MAX_HEIGHT = 2400
# The pages that show the outage first (the circuit is open for only its 30-s cool-down), then the rest.
PAGES = [("circuits", "/jobwatch/circuits/"), ("overview", "/jobwatch/"), ("alerts", "/jobwatch/alerts/"),
         ("fanout", "/jobwatch/fanout/"), ("failures", "/jobwatch/failures/"), ("jobs", "/jobwatch/jobs/?state=failed")]
# Pages whose address depends on what the run recorded: read from its database when they are taken.
NEWEST_FAILED_JOB = ("SELECT task_id FROM monitors_jobexecution WHERE state = 'failed' AND exception_type <> '' "
                     "ORDER BY error_target <> '' DESC, id DESC LIMIT 1")
BUSIEST_QUEUE = "SELECT queue FROM monitors_queuesample ORDER BY sampled_at DESC, depth DESC LIMIT 1"
# The task whose runtime spread the most this run (its speed page has the most to show): the most
# distinct runtime buckets, then the most jobs.
WIDEST_TASK = ("SELECT task_name FROM monitors_jobhistogram WHERE resolution = 60 AND measure = 'runtime' "
               "GROUP BY task_name ORDER BY count(DISTINCT upper_ms) DESC, sum(count) DESC LIMIT 1")
# When in a cycle to take them: during the gateway outage, once the trouble shows — an active
# critical incident (the open circuit's) and the payment-gateway circuit open in the database. The
# circuit opens a few seconds into the outage and closes after its 30-s cool-down (demo/tasks.py),
# about 35 s into the outage, and a detector pass may come 25 s or more into it, so Chromium is
# started and signed in ahead (it takes several seconds on a busy machine), the trouble is awaited
# from then, and the pages are taken at the latest SCREENSHOT_LATEST_AFTER_OUTAGE_STARTS into the
# outage, trouble or not. The cycle and the outage's start are read from the workload's plan line.
SCREENSHOT_READY_AFTER_OUTAGE_STARTS = 12.0
SCREENSHOT_LATEST_AFTER_OUTAGE_STARTS = 30.0
SCREENSHOT_TAKES_SECONDS = 60.0
TROUBLE = ("SELECT (SELECT COUNT(*) FROM monitors_incident WHERE state IN ('pending', 'open', 'resolving') "
           "AND severity = 'critical'), (SELECT COUNT(*) FROM monitors_circuit WHERE state IN ('open', 'forced_open'))")
# A count in a title (not a part of an address such as 127.0.0.1:8765).
COUNT = re.compile(r"(?<![\w.:])\d+(?:[.,]\d+)*(?![\w.:])")


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def parse_arguments():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="how long the demo runs and is watched (default 10)")
    parser.add_argument("--screenshots", action="store_true",
                        help="take the README's docs/screenshots/*.png late in the run, during a cycle's trouble")
    parser.add_argument("--keep", action="store_true",
                        help="keep the demo's var dir (its SQLite database), rundemo's output and the samples")
    arguments = parser.parse_args()
    if arguments.minutes <= 0:
        parser.error("--minutes must be above 0")
    return arguments


# -- the demo ------------------------------------------------------------------------------------


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def port_taken(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def environment(var_dir, gateway_port):
    env = {key: value for key, value in os.environ.items() if not key.startswith(INHERITED_PREFIXES)}
    env.update(JOBWATCH_VAR_DIR=str(var_dir), PYTHONUNBUFFERED="1")
    if gateway_port != DEFAULT_GATEWAY_PORT:
        env["DEMO_GATEWAY_URL"] = f"http://127.0.0.1:{gateway_port}"
    return env


def run_checked(argv, env, what):
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}")


def prepare(env):
    """What bin/demo does before rundemo: migrate, and the demo / demo superuser."""
    manage = [sys.executable, "manage.py"]
    run_checked([*manage, "migrate", "--no-input", "-v", "0"], env, "migrate")
    run_checked([*manage, "shell", "-v", "0", "-c", CREATE_DEMO_USER], env, "creating the demo user")


class Demo:
    """`manage.py rundemo` in a session of its own; its output goes to a log file, and the moment
    the workload announces its plan (its start, and the trouble's cycle) is noted."""

    PLAN = re.compile(r"^workload\s*\|.*demo workload:")

    def __init__(self, env, port, log_path, started):
        self.env, self.port, self.log_path, self.started = env, port, log_path, started
        self.workload_started = None  # seconds since `started`
        self.plan_line = ""
        self.process = None
        self.pump = None

    def start(self):
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "rundemo", "--port", str(self.port)], cwd=ROOT, env=self.env,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        self.pump = threading.Thread(target=self._pump, name="rundemo-output", daemon=True)
        self.pump.start()

    def _pump(self):
        with open(self.log_path, "w", encoding="utf-8") as out:
            for raw in iter(self.process.stdout.readline, b""):
                line = raw.decode("utf-8", errors="replace")
                out.write(f"{time.monotonic() - self.started:7.1f} {line}")
                out.flush()
                if self.workload_started is None and self.PLAN.search(line):
                    self.workload_started = time.monotonic() - self.started
                    self.plan_line = line.strip()
        self.process.stdout.close()

    def running(self):
        return self.process is not None and self.process.poll() is None

    def trouble_cycle(self):
        """(cycle, outage start) in seconds, from the workload's plan line; rundemo's values if unread."""
        cycle = re.search(r"repeating every (\d+(?:\.\d+)?) s", self.plan_line)
        outage = re.search(r"gateway outage at (\d+(?:\.\d+)?) s", self.plan_line)
        return (float(cycle.group(1)) if cycle else 90.0), (float(outage.group(1)) if outage else 45.0)

    def log_tail(self, lines=40):
        try:
            return "".join(self.log_path.read_text(encoding="utf-8", errors="replace").splitlines(True)[-lines:])
        except OSError:
            return ""


def processes_marked(marker):
    """Pids of this machine's processes that carry `marker` (this run's JOBWATCH_VAR_DIR=…) in their
    environment: everything the demo started, whatever session or group it moved to."""
    found = []
    needle = marker.encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as environ:
                if needle in environ.read().split(b"\0"):
                    found.append(int(entry))
        except OSError:
            continue
    return found


def stop_demo(demo, marker):
    """SIGINT to rundemo (it stops its children), a grace, then SIGKILL to its group and to every
    process of this run that is left. Returns how many processes were still there at the end."""
    if demo.process is not None and demo.process.poll() is None:
        log("stopping the demo (SIGINT to rundemo)")
        try:
            os.killpg(demo.process.pid, signal.SIGINT)
        except ProcessLookupError:
            pass
        try:
            demo.process.wait(STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            log(f"rundemo still running after {STOP_GRACE_SECONDS:g} s: killing it")
    if demo.process is not None:
        try:
            os.killpg(demo.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        demo.process.wait()
    leftovers = processes_marked(marker)
    for pid in leftovers:  # each of them carries this run's marker: ours, whatever group it is in
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    if leftovers:
        log(f"killed {len(leftovers)} process(es) the demo left behind: {leftovers}")
    deadline = time.monotonic() + 5
    while processes_marked(marker) and time.monotonic() < deadline:
        time.sleep(0.2)
    if demo.pump is not None:
        demo.pump.join(timeout=5)
    return len(processes_marked(marker))


# -- reading the demo's database ------------------------------------------------------------------


def connect(database):
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=20)
    connection.row_factory = sqlite3.Row
    return connection


def take_sample(database, elapsed):
    placeholders = ",".join("?" * len(ACTIVE_STATES))
    with connect(database) as db:
        incidents = [dict(row) for row in db.execute(
            f"SELECT id, state, severity, kind, title, opened_at FROM monitors_incident WHERE state IN ({placeholders}) "
            "ORDER BY id", ACTIVE_STATES)]
        findings = [dict(row) for row in db.execute(
            "SELECT id, kind, severity, title, incident_id FROM monitors_finding WHERE status = 'open' ORDER BY id")]
        sent, created = db.execute(
            "SELECT COALESCE(SUM(status = 'sent'), 0), COUNT(*) FROM monitors_notification").fetchone()
    db.close()
    by_severity = Counter(incident["severity"] for incident in incidents)
    return {
        "t": round(elapsed, 1),
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "active": len(incidents),
        "paging": sum(by_severity[s] for s in PAGING),
        "by_severity": {s: by_severity[s] for s in SEVERITIES},
        "incidents": incidents,
        "open_findings": len(findings),
        "open_findings_by_kind": dict(Counter(f["kind"] for f in findings)),
        "findings": findings,
        "notifications_sent": sent,
        "notifications_created": created,
    }


def history(database):
    """Every incident the run opened, with its findings' kinds; notifications by event."""
    with connect(database) as db:
        incidents = [dict(row) for row in db.execute(
            "SELECT id, state, severity, kind, subject, title, opened_at, notified_at, resolved_at, merged_into_id "
            "FROM monitors_incident ORDER BY id")]
        for incident in incidents:
            incident["findings"] = [dict(row) for row in db.execute(
                "SELECT id, kind, subject, severity, status, title, keys, links FROM monitors_finding "
                "WHERE incident_id = ? ORDER BY id", [incident["id"]])]
        unattached = [dict(row) for row in db.execute(
            "SELECT id, kind, subject, severity, status, title FROM monitors_finding WHERE incident_id IS NULL ORDER BY id")]
        events = dict(db.execute("SELECT event, COUNT(*) FROM monitors_notification WHERE status = 'sent' GROUP BY event").fetchall())
    db.close()
    return {"incidents": incidents, "findings_without_incident": unattached, "notifications_by_event": events}


# -- screenshots ---------------------------------------------------------------------------------


def pages_to_take(database):
    """PAGES, and the queue, job and task pages of what this run recorded."""
    pages = list(PAGES)
    with connect(database) as db:
        queue = db.execute(BUSIEST_QUEUE).fetchone()
        failed = db.execute(NEWEST_FAILED_JOB).fetchone()
        task = db.execute(WIDEST_TASK).fetchone()
    db.close()
    if task:
        pages.append(("task", f"/jobwatch/task/?{urlencode({'name': task[0], 'window': '15m'})}"))
    if queue:
        pages.append(("queue", f"/jobwatch/queues/{queue[0]}/"))
    if failed:
        pages.append(("job", f"/jobwatch/jobs/{failed[0]}/"))
    return pages


def in_trouble(database):
    """(active critical incidents, open circuits) in the demo's database now."""
    with connect(database) as db:
        critical, circuits = db.execute(TROUBLE).fetchone()
    db.close()
    return critical, circuits


def take_screenshots(base_url, results, database, started, not_after):
    """Log in as demo / demo, wait for the trouble (until `not_after`, a time.monotonic()) and save
    the README's pages; `results` gets their paths, the pages that could not be taken, or an error.
    A page that does not answer 200 at its own address (an error page, the sign-in page) is not
    saved: the README keeps its previous picture and the page is named in `results["failed"]`."""
    try:
        from playwright import sync_api

        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                context = browser.new_context(base_url=base_url, viewport=VIEWPORT)
                context.set_default_timeout(30_000)
                page = context.new_page()
                page.goto("/accounts/login/?next=/jobwatch/")
                page.fill("#id_username", "demo")
                page.fill("#id_password", "demo")
                page.click("button[type=submit]")
                page.wait_for_url("**/jobwatch/")
                results["signed_in_at_s"] = round(time.monotonic() - started, 1)
                trouble = (0, 0)
                while True:
                    try:
                        trouble = in_trouble(database)
                    except sqlite3.Error:
                        pass
                    if all(trouble) or time.monotonic() >= not_after:
                        break
                    time.sleep(0.5)
                results["at_s"] = round(time.monotonic() - started, 1)
                results["critical_incidents"], results["open_circuits"] = trouble
                SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
                for name, path in pages_to_take(database):
                    response = page.goto(path)
                    try:
                        page.wait_for_load_state("networkidle", timeout=10_000)
                    except sync_api.TimeoutError:
                        pass  # a page that polls may never be idle; it has loaded
                    status = response.status if response is not None else None
                    landed = urlsplit(page.url).path
                    if status != 200 or landed != urlsplit(path).path:
                        results.setdefault("failed", {})[name] = f"{path} answered {status} at {landed}"
                        continue
                    page.wait_for_timeout(1500)  # charts drawn
                    results[name] = str(screenshot(page, SCREENSHOT_DIR / f"{name}.png"))
            finally:
                browser.close()
    except Exception as error:  # noqa: BLE001 (the run's figures stand without its pictures)
        results["error"] = f"{type(error).__name__}: {error}"


def screenshot(page, path):
    """The whole page, cut at MAX_HEIGHT pixels (as tests/browser.py does)."""
    width, height = page.evaluate("() => [document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
    clip = {"x": 0, "y": 0, "width": width, "height": MAX_HEIGHT} if height > MAX_HEIGHT else None
    page.screenshot(path=path, full_page=True, clip=clip, animations="disabled", caret="hide")
    return path


def screenshot_time(demo, duration):
    """Seconds since the start: the last moment before the end, with time to spare, that is
    SCREENSHOT_READY_AFTER_OUTAGE_STARTS into a cycle's gateway outage (when Chromium starts)."""
    wait = SCREENSHOT_LATEST_AFTER_OUTAGE_STARTS - SCREENSHOT_READY_AFTER_OUTAGE_STARTS
    latest = max(duration - SCREENSHOT_TAKES_SECONDS - wait, 0.0)
    if demo.workload_started is None:
        return latest
    cycle, outage = demo.trouble_cycle()
    first = demo.workload_started + outage + SCREENSHOT_READY_AFTER_OUTAGE_STARTS
    if first > latest:
        return latest
    return first + cycle * ((latest - first) // cycle)


# -- the report ----------------------------------------------------------------------------------


def minute_of(sample):
    return max(1, int(-(-sample["t"] // 60)))  # (m-1)*60 < t <= m*60 is minute m; t=0 counts in minute 1


def print_table(samples):
    print()
    print("The demo's incidents, minute by minute (the peak of that minute's samples, every 15 s)")
    print(f"{'min':>3} {'n':>2}  {'active':>6} {'paging':>6} {'crit':>4} {'warn':>4} {'info':>4}  {'findings':>8}  "
          f"{'notified':>8}  active incidents at the peak (severity, state: title)")
    by_minute = {}
    for sample in samples:
        by_minute.setdefault(minute_of(sample), []).append(sample)
    for minute, group in sorted(by_minute.items()):
        peak = max(group, key=lambda s: (s["active"], s["paging"], s["t"]))
        print(f"{minute:>3} {len(group):>2}  {max(s['active'] for s in group):>6} {max(s['paging'] for s in group):>6} "
              f"{max(s['by_severity']['critical'] for s in group):>4} {max(s['by_severity']['warning'] for s in group):>4} "
              f"{max(s['by_severity']['info'] for s in group):>4}  {max(s['open_findings'] for s in group):>8}  "
              f"{group[-1]['notifications_sent']:>8}  at {peak['t']:.0f} s:")
        for incident in peak["incidents"]:
            print(f"{'':>8}#{incident['id']} {incident['severity']}, {incident['state']}: {incident['title']}")
    print("n: samples in the minute; active: incidents pending, open or resolving; paging: of them warning or critical; "
          "findings: open findings; notified: notifications sent by the end of the minute.")


def print_incidents(past):
    print()
    print("Every incident the run opened (state at the end; its findings)")
    for incident in past["incidents"]:
        merged = f" into #{incident['merged_into_id']}" if incident["merged_into_id"] else ""
        print(f"#{incident['id']} [{incident['severity']}, {incident['state']}{merged}] {incident['title']}")
        for finding in incident["findings"]:
            print(f"      finding {finding['id']} {finding['kind']} ({finding['severity']}, {finding['status']}): {finding['title']}")
    if past["findings_without_incident"]:
        print(f"findings without an incident: {len(past['findings_without_incident'])}")


def machine():
    cpu = platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{os.cpu_count()} x {cpu}, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def load_average():
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def summary(arguments, samples, past, extra):
    # Each incident's titles while it was active (its lead may change), counts written N so that a
    # title growing from "3 orphaned …" to "38 orphaned …" is one.
    titles = []
    for sample in samples:
        for incident in sample["incidents"]:
            title = f"#{incident['id']} {re.sub(COUNT, 'N', incident['title'])}"
            if title not in titles:
                titles.append(title)
    titles.sort(key=lambda title: int(title[1:].split(" ", 1)[0]))
    max_active = max((s["active"] for s in samples), default=0)
    incidents = past["incidents"] if past else []
    states = Counter(incident["state"] for incident in incidents)
    return {
        "benchmark": "demo_incidents",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        **extra,
        "minutes": arguments.minutes,
        "samples": len(samples),
        "planted_problems": PLANTED_PROBLEMS,
        "max_active_incidents": max_active,
        "max_active_paging_incidents": max((s["paging"] for s in samples), default=0),
        "max_active_critical_incidents": max((s["by_severity"]["critical"] for s in samples), default=0),
        "max_open_findings": max((s["open_findings"] for s in samples), default=0),
        "notifications": samples[-1]["notifications_sent"] if samples else 0,
        "notifications_by_event": past["notifications_by_event"] if past else {},
        "incidents_opened": len(incidents) - states["merged"],
        "incidents_by_state": dict(states),
        "incident_titles": titles,
        "targets": {"max_active_incidents": "<= planted_problems"},
        "met": bool(samples) and extra.get("complete", False) and max_active <= PLANTED_PROBLEMS,
    }


# -- the run -------------------------------------------------------------------------------------


def interrupted(signum, frame):
    raise KeyboardInterrupt


def main():
    from benchmarks.harness import code_fingerprint, code_version

    arguments = parse_arguments()
    # SIGINT too: a shell without job control starts a background command with SIGINT ignored, and
    # Python then leaves it so (no KeyboardInterrupt).
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, interrupted)
    scratch = Path(tempfile.mkdtemp(prefix="jobwatch-demo-incidents-"))
    var_dir = scratch / "var"
    var_dir.mkdir()
    marker = f"JOBWATCH_VAR_DIR={var_dir}"
    port = free_port()
    gateway_port = DEFAULT_GATEWAY_PORT if not port_taken(DEFAULT_GATEWAY_PORT) else free_port()
    env = environment(var_dir, gateway_port)
    database = var_dir / "jobwatch.sqlite3"
    duration = arguments.minutes * 60
    fingerprint, code = code_fingerprint(), code_version()
    extra = {
        "code": code,
        "settings_changed": {"DEMO_GATEWAY_URL": env["DEMO_GATEWAY_URL"]} if "DEMO_GATEWAY_URL" in env else {},
        "load_average_start": load_average(),
    }
    samples, past, shots = [], None, {}
    demo = None
    status = 0
    shooter = None
    log(f"demo_incidents: {arguments.minutes:g} min of rundemo on port {port} (gateway {gateway_port}) in {scratch}")
    try:
        log("preparing the database as bin/demo does (migrate, the demo / demo superuser)")
        prepare(env)
        started = time.monotonic()
        demo = Demo(env, port, scratch / "rundemo.log", started)
        demo.start()
        shoot_at = None
        next_sample = 0.0
        while True:
            elapsed = time.monotonic() - started
            if not demo.running():
                raise RuntimeError(f"rundemo exited with {demo.process.returncode} after {elapsed:.0f} s:\n{demo.log_tail()}")
            if elapsed >= next_sample:
                try:
                    sample = take_sample(database, elapsed)
                except sqlite3.Error as error:
                    log(f"could not read the database at {elapsed:.0f} s: {error}")
                else:
                    samples.append(sample)
                    log(f"{elapsed:5.0f} s: {sample['active']} active incident(s) {sample['by_severity']}, "
                        f"{sample['open_findings']} open finding(s), {sample['notifications_sent']} notification(s) sent")
                if next_sample >= duration:
                    break
                next_sample = min(next_sample + SAMPLE_SECONDS, duration)
            if arguments.screenshots and shooter is None:
                if shoot_at is None and (demo.workload_started is not None or elapsed > 60):
                    shoot_at = screenshot_time(demo, duration)
                    log(f"screenshots from {shoot_at:.0f} s (workload started at "
                        f"{demo.workload_started if demo.workload_started is not None else float('nan'):.0f} s)")
                if shoot_at is not None and elapsed >= shoot_at:
                    log("signing in for the screenshots; they are taken once the trouble shows")
                    shots["started_at_s"] = round(elapsed, 1)
                    not_after = time.monotonic() + SCREENSHOT_LATEST_AFTER_OUTAGE_STARTS - SCREENSHOT_READY_AFTER_OUTAGE_STARTS
                    shooter = threading.Thread(target=take_screenshots, name="screenshots", daemon=True,
                                               args=(f"http://127.0.0.1:{port}", shots, database, started, not_after))
                    shooter.start()
            time.sleep(0.2)
        if shooter is not None:
            shooter.join(120)
            if shooter.is_alive():
                shots["error"] = "the screenshots took longer than 120 s"
        extra["complete"] = True
    except KeyboardInterrupt:
        log("interrupted: stopping everything it started")
        status = 130
    except RuntimeError as error:
        log(f"could not measure: {error}")
        status = 2
    finally:
        # The clean-up runs to its end (at most STOP_GRACE_SECONDS and a few more): a second Ctrl-C
        # would otherwise leave the demo's processes behind.
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        if demo is not None:
            left = stop_demo(demo, marker)
            extra["processes_left"] = left
            if left:
                log(f"WARNING: {left} process(es) of this run are still there")
        if database.exists():
            try:
                past = history(database)
            except sqlite3.Error as error:
                log(f"could not read the incidents' history: {error}")
        if arguments.keep:
            samples_path = scratch / "samples.json"
            samples_path.write_text(json.dumps({"samples": samples, "history": past}, indent=1, default=str))
            log(f"kept {scratch} (var/jobwatch.sqlite3, rundemo.log, samples.json)")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    extra.setdefault("complete", False)
    extra["load_average_end"] = load_average()
    extra["code_changed_during_run"] = code_fingerprint() != fingerprint
    if demo is not None:
        extra["workload_started_s"] = demo.workload_started and round(demo.workload_started, 1)
    if arguments.screenshots:
        extra["screenshots"] = shots
    if samples:
        print_table(samples)
    if past:
        print_incidents(past)
    print(json.dumps(summary(arguments, samples, past, extra)), flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
