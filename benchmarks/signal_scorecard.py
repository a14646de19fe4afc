"""The scorecard of what Jobwatch *says*: for each planted fault, the findings it opens, the
incidents they become, the notifications people get, and whether that is one incident that names
the right cause, with all the planted jobs in its evidence, within a minute.

    .venv/bin/python benchmarks/signal_scorecard.py                      # all ten scenarios, ~20 min
    .venv/bin/python benchmarks/signal_scorecard.py --scenario healthy --scenario rollbacks
    .venv/bin/python benchmarks/signal_scorecard.py --keep               # keep the databases to look at

Each scenario runs alone, from a fresh PostgreSQL database (jobwatch_signal_<scenario>, dropped,
created and migrated) and a fresh broker (a Redis database number, flushed), with a real
`celery -A dashboard worker -B` at Jobwatch's default intervals (sampling 15 s, detectors 30 s,
alerts 10 s, hold 15 s) and default thresholds: the faults are planted big enough for them. A
webhook channel (min_severity warning) points at a receiver inside the benchmark that keeps every
notification. The faults are planted through the demo shop from the benchmark's own process
(benchmarks/signal_scenarios.py says what each plants, which incident is the right one and how
recall is read); one process per scenario (benchmarks/signal_run.py).

Targets: healthy — 0 findings, 0 incidents, 0 notifications; a fault — exactly one incident, and
it names the right cause and subject, at most one notification, recall 100 %, its first
notification within 60 s of the fault's start; a code smell (trivial_saves, duplicates: info on
DESIGN.md's scale, never paged) — the same, but no notification, its incident held and shown.
The exit status is non-zero only when the benchmark could not measure, never for a missed target.
The last line is one line of JSON.

(Not named signal.py: run as a script, a file of that name shadows the standard library's
`signal` module for every other script in this folder.)
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
import shutil
import signal
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(_HERE).parent
SCENARIO_NAMES = ["healthy", "storm", "trivial_saves", "rollbacks", "ran_before_commit", "deleted",
                  "service_down_urllib", "circuit_open", "no_consumer", "duplicates"]
POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432"
REDIS_URL = "redis://127.0.0.1:6379"
DATABASE_PREFIX = "jobwatch_signal_"
# Variables a caller's shell may set that would change what is measured (a threshold, an interval).
INHERITED_PREFIXES = ("CELERY_", "JOBWATCH_", "DJANGO_", "DATABASE_URL", "DEMO_", "DEBUG")
# The longest a scenario may take (worker start, ~3 min of watching, stopping) before it is cut.
SCENARIO_TIMEOUT = 600
TARGETS = {
    "healthy": "0 findings, 0 incidents, 0 notifications",
    "faults": "exactly 1 incident naming the right cause and subject, ≤1 notification, recall 100%, first notification ≤ 60 s",
    # trivial_saves and duplicates at a normal rate are code smells: info on DESIGN.md's severity
    # scale, "shown but never paged by default". Held to the faults' target they could only pass
    # by paging, which the design forbids.
    "smells": "exactly 1 incident naming the right cause and subject, shown (held and open), 0 notifications "
              "(info: shown, never paged), recall 100%",
}
SETTINGS_CHANGED = {}  # none: default intervals, hold and thresholds (and the demo's own circuit options)


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def parse_arguments():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", action="append", choices=SCENARIO_NAMES, metavar="NAME",
                        help=f"run only this scenario (repeatable); one of {', '.join(SCENARIO_NAMES)}")
    parser.add_argument("--keep", action="store_true", help="keep the databases (and the workers' logs) afterwards")
    parser.add_argument("--redis-db", type=int, default=8, help="Redis database number for the broker, flushed before each scenario (default 8)")
    return parser.parse_args()


# -- a scenario's fresh database and broker --------------------------------------------------------


def environment(database, redis_db, scratch):
    env = {key: value for key, value in os.environ.items() if not key.startswith(INHERITED_PREFIXES)}
    env.update(
        DJANGO_SETTINGS_MODULE="dashboard.settings",
        DATABASE_URL=f"{POSTGRES_URL}/{database}",
        CELERY_BROKER_URL=f"{REDIS_URL}/{redis_db}",
        JOBWATCH_VAR_DIR=str(scratch / "var"),  # the worker's files, away from var/ of whoever else works here
        PYTHONPATH=str(ROOT),
    )
    return env


def prepare(database, redis_db, env):
    import redis

    from benchmarks.databases import recreate_database

    redis.Redis.from_url(f"{REDIS_URL}/{redis_db}").flushdb()
    recreate_database(database)
    done = subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"migrate failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")


def drop(database, redis_db):
    import psycopg
    import redis
    from psycopg import sql

    from benchmarks.databases import POSTGRES_ADMIN_URL

    redis.Redis.from_url(f"{REDIS_URL}/{redis_db}").flushdb()
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))


# -- one scenario, in its own process --------------------------------------------------------------


def code_version():
    """HEAD, "+changes" when the measured code differs from it, and a hash of the measured files:
    others commit in this tree while the benchmark runs, so each scenario says what it measured.
    --no-optional-locks: reading must not take git's index lock from under someone's commit."""
    from benchmarks.harness import MEASURED_CODE, code_fingerprint

    def git(*words):
        done = subprocess.run(["git", "--no-optional-locks", *words], cwd=ROOT, capture_output=True, text=True, check=False)
        return done.stdout.strip() if done.returncode == 0 else None

    head = git("rev-parse", "--short", "HEAD")
    changed = git("status", "--porcelain", "--", *MEASURED_CODE)
    return f"{head or '?'}{'+changes' if changed else ''} ({code_fingerprint()[:12]})"


def run_scenario(name, arguments, scratch):
    database = f"{DATABASE_PREFIX}{name}"
    env = environment(database, arguments.redis_db, scratch)
    result_path = scratch / f"result-{name}.json"
    child = None
    try:
        code = code_version()
        log(f"{name}: code {code}; fresh database {database}, Redis db {arguments.redis_db} flushed, migrating")
        prepare(database, arguments.redis_db, env)
        child = subprocess.Popen([sys.executable, "-m", "benchmarks.signal_run", name, "--result", str(result_path),
                                  "--scratch", str(scratch)], cwd=ROOT, env=env)
        child.wait(SCENARIO_TIMEOUT)
    except subprocess.TimeoutExpired:
        return {"error": f"the scenario took longer than {SCENARIO_TIMEOUT} s and was stopped", "met": False}
    except RuntimeError as error:
        return {"error": str(error), "met": False}
    finally:
        stop_child(child)
        kill_leftover_worker(scratch, name)
        if not arguments.keep:
            drop(database, arguments.redis_db)
    if not result_path.exists():
        return {"error": f"the scenario's process exited with status {child.returncode} and no figures", "met": False}
    figures = json.loads(result_path.read_text())
    figures.setdefault("met", False)
    figures["code"] = code
    return figures


def stop_child(child):
    """Ask the scenario's process to stop (it stops its worker), and kill it if it will not."""
    if child is None or child.poll() is not None:
        return
    try:
        child.wait(5)  # after a Ctrl-C it has the SIGINT too, and is already stopping
        return
    except subprocess.TimeoutExpired:
        child.send_signal(signal.SIGTERM)
    try:
        child.wait(90)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def kill_leftover_worker(scratch, name):
    """A scenario process that died without stopping its worker left the worker's pid behind."""
    pid_path = scratch / f"worker-{name}.pid"
    if not pid_path.exists():
        return
    try:
        os.killpg(int(pid_path.read_text()), signal.SIGKILL)
        log(f"{name}: killed the worker group the scenario left running")
    except (ProcessLookupError, ValueError):
        pass
    pid_path.unlink(missing_ok=True)


# -- the scorecard -------------------------------------------------------------------------------


def kinds(counts):
    return ", ".join(f"{kind} {n}" for kind, n in sorted(counts.items())) or "-"


def row_of(name, figures):
    if "error" in figures and "findings" not in figures:
        return f"{name:<20} ERROR: {figures['error'].splitlines()[0][:150]}"
    recall = "-" if figures["recall"] is None else f"{figures['recall']:.0%} ({figures['recall_found']}/{figures['planted']})"
    page = "-" if figures["right_notification_s"] is None else f"{figures['right_notification_s']:.0f}"
    if not figures.get("paged", True):  # a smell: when its incident opened, unpaged
        page = "-" if figures["right_open_s"] is None else f"({figures['right_open_s']:.0f})"
    first = "-" if figures["first_notification_s"] is None else f"{figures['first_notification_s']:.0f}"
    right = "-" if name == "healthy" else ("yes" if figures["right_incidents"] == 1 else f"no ({figures['right_incidents']})")
    page_named = {True: "; the right incident's first page named the cause", False: "; the right incident's first page "
                  "named another lead", None: ""}[figures.get("right_page_named_cause")]
    return (f"{name:<20} {figures['findings']:>3} {figures['incidents']:>4}+{figures['incidents_dismissed']:<3} "
            f"{figures['notifications']:>3}  {right:<7} {recall:<14} {figures['false_findings']:>5} "
            f"{first:>6} {page:>6}  {'MET' if figures['met'] else 'missed'}\n"
            f"{'':<20} findings: {kinds(figures['findings_by_kind'])}; notifications: {kinds(figures['notifications_by_event'])}"
            f"{page_named}")


def print_table(results):
    print()
    print("Jobwatch's signal, one planted fault per scenario (default intervals, hold and thresholds)")
    print(f"{'scenario':<20} {'fnd':>3} {'inc+dismissed':<9} {'ntf':>3}  {'right?':<7} {'recall':<14} {'false':>5} "
          f"{'1st s':>6} {'right s':>6}  target")
    for name, figures in results.items():
        print(row_of(name, figures))
    print("fnd: findings opened; inc: incidents opened (not merged, not dismissed) + dismissed; ntf: notifications sent; "
          "right?: exactly one incident whose lead finding names the right cause and subject (how many, if not); "
          "false: findings not in that incident; 1st s / right s: seconds from the fault's start to the first "
          "notification / the right incident's first — in brackets for a smell (trivial_saves, duplicates: info, "
          "never paged): when its incident opened.")


def machine():
    cpu = platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{os.cpu_count()} x {cpu}, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def summary(results, code_before, code_after):
    keep = ("fault", "expected", "findings", "findings_by_kind", "findings_by_severity", "incidents", "incidents_dismissed",
            "incidents_merged", "notifications", "notifications_by_event", "right_incidents", "right_incident",
            "right_incident_findings", "planted", "recall_found", "recall", "recall_method", "false_findings",
            "first_notification_s", "right_notification_s", "right_open_s", "right_page_named_cause", "paged", "observed_s",
            "code", "error")
    return {
        "benchmark": "signal",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "code": code_before,
        "code_changed_during_run": code_before != code_after,
        "settings_changed": SETTINGS_CHANGED,
        "scenarios": {name: {key: figures[key] for key in keep if key in figures} for name, figures in results.items()},
        "targets": TARGETS,
        "met": {name: bool(figures.get("met")) for name, figures in results.items()},
    }


# Two runs at once would drop each other's databases and flush each other's broker: one run per
# PostgreSQL server holds this advisory lock (released when its connection closes, even on a crash).
RUN_LOCK = 7_419_000_001


def one_run_at_a_time():
    """The lock's connection, kept open for the run; None when another run holds it."""
    import psycopg

    from benchmarks.databases import POSTGRES_ADMIN_URL

    connection = psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True)
    if connection.execute("SELECT pg_try_advisory_lock(%s)", [RUN_LOCK]).fetchone()[0]:
        return connection
    connection.close()
    return None


def interrupted(signum, frame):
    raise KeyboardInterrupt


def main():
    arguments = parse_arguments()
    names = [name for name in SCENARIO_NAMES if name in (arguments.scenario or SCENARIO_NAMES)]
    signal.signal(signal.SIGTERM, interrupted)
    lock = one_run_at_a_time()
    if lock is None:
        log("another signal benchmark is running on this PostgreSQL server (same databases and broker); wait for it")
        return 2
    scratch = Path(tempfile.mkdtemp(prefix="jobwatch-signal-"))
    code = code_version()
    log(f"signal: {len(names)} scenario(s); settings changed from the defaults: {SETTINGS_CHANGED or 'none'}; logs in {scratch}")
    results = {}
    try:
        for index, name in enumerate(names, 1):
            log(f"scenario {index}/{len(names)}: {name}")
            results[name] = run_scenario(name, arguments, scratch)
    except KeyboardInterrupt:
        log("interrupted; the workers it started have been stopped")
        return 130
    finally:
        if not arguments.keep:
            shutil.rmtree(scratch, ignore_errors=True)
        lock.close()
    print_table(results)
    print(json.dumps(summary(results, code, code_version())), flush=True)
    errors = [name for name, figures in results.items() if "error" in figures and "findings" not in figures]
    return 2 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
