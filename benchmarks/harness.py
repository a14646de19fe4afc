"""Real services and a real worker for benchmark runs: the PostgreSQL database and Redis database
a benchmark owns, the publisher and worker processes with one mode's settings, and the probes
that say when the worker has finished.

Everything here runs processes of its own and stops them by their own ids.
"""

import hashlib
import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import redis
from psycopg import sql

from benchmarks.apps import PROBE_DIR_VARIABLE, read_probes

ROOT = Path(__file__).resolve().parent.parent
QUEUE = "celery"
CONCURRENCY = 2
# Variables a caller's shell may set that would change what a mode measures.
INHERITED_PREFIXES = ("CELERY_", "JOBWATCH_", "DJANGO_", "DATABASE_URL", "DEBUG")
# Tasks between Celery's closing of database connections, with --reuse-db-connections.
DB_REUSE_MAX = 1000
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class BenchmarkError(Exception):
    """The benchmark could not measure (as opposed to: the recorder missed its target)."""


class Bench:
    """What every run shares: the benchmark's own PostgreSQL database and Redis database, and the
    environment that gives a publisher or worker one mode's settings."""

    def __init__(self, arguments, scratch):
        self.tasks = arguments.tasks
        self.server_url = arguments.postgres.rstrip("/")
        self.database_url = f"{self.server_url}/{arguments.database}"
        self.database = arguments.database
        self.broker_url = f"{arguments.redis.rstrip('/')}/{arguments.redis_db}"
        self.scratch = scratch
        self.db_reuse_max = DB_REUSE_MAX if arguments.reuse_db_connections else None
        self.broker = redis.Redis.from_url(self.broker_url)
        self.db = None

    def environment(self, mode, **extra):
        env = {key: value for key, value in os.environ.items() if not key.startswith(INHERITED_PREFIXES)}
        env.update(
            DJANGO_SETTINGS_MODULE="benchmarks.settings",
            JOBWATCH_BENCH_MODE=mode,
            DATABASE_URL=self.database_url,
            CELERY_BROKER_URL=self.broker_url,
            JOBWATCH_VAR_DIR=str(self.scratch / "var"),
            PYTHONPATH=str(ROOT),
            **extra,
        )
        if self.db_reuse_max:
            env["JOBWATCH_BENCH_DB_REUSE_MAX"] = str(self.db_reuse_max)
        return env

    def prepare(self, migrate_mode):
        try:
            self.broker.ping()
        except redis.RedisError as error:
            raise BenchmarkError(f"Redis at {self.broker_url} is not reachable: {error}") from None
        try:
            # Created afresh each time: the schema is then exactly what the migrations say now,
            # even while an unreleased migration is still being edited in place.
            with psycopg.connect(f"{self.server_url}/postgres", autocommit=True) as admin:
                name = sql.Identifier(self.database)
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
                admin.execute(sql.SQL("CREATE DATABASE {}").format(name))
        except psycopg.Error as error:
            raise BenchmarkError(f"PostgreSQL at {self.server_url} is not usable: {error}") from None
        run_checked([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], self.environment(migrate_mode), "migrate")
        self.db = psycopg.connect(self.database_url, autocommit=True)

    def reset(self, tables):
        """An empty broker and empty tables, and nothing left for PostgreSQL to write back."""
        self.broker.flushdb()
        self.db.execute(sql.SQL("TRUNCATE {} RESTART IDENTITY").format(sql.SQL(", ").join(map(sql.Identifier, tables))))
        self.db.execute("CHECKPOINT")

    def count(self, query):
        return self.db.execute(query).fetchone()[0]

    def close(self):
        if self.db is not None:
            self.db.close()
        self.broker.close()


def run_checked(command, env, what):
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise BenchmarkError(f"{what} failed (exit {done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return done.stdout


def publish(bench, mode):
    output = run_checked([sys.executable, "-m", "benchmarks.publish", str(bench.tasks)], bench.environment(mode), f"{mode} publisher")
    timing = json.loads(output.strip().splitlines()[-1])
    queued = bench.broker.llen(QUEUE)
    if queued != bench.tasks:
        raise BenchmarkError(f"{mode}: published {bench.tasks} tasks but the queue holds {queued}")
    return timing


class Worker:
    """`celery -A dashboard worker`, prefork, concurrency 2, in a session of its own so that it is
    stopped (and, failing that, killed with its pool) by its own id, whatever else runs here."""

    def __init__(self, bench, mode, probe_dir):
        self.log_path = bench.scratch / f"worker-{mode}.log"
        command = [
            sys.executable, "-m", "celery", "-A", "dashboard", "worker", "--pool", "prefork",
            "--concurrency", str(CONCURRENCY), "--queues", QUEUE, "--hostname", f"bench-{mode}@%h",
            "--loglevel", "WARNING", "--without-gossip", "--without-mingle", "--without-heartbeat",
        ]
        with self.log_path.open("wb") as log:
            env = bench.environment(mode, **{PROBE_DIR_VARIABLE: str(probe_dir)})
            self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def check_alive(self):
        if self.process.poll() is not None:
            raise BenchmarkError(f"the worker exited with status {self.process.returncode}:\n{self.log_tail()}")

    def log_tail(self):
        return self.log_path.read_text(errors="replace")[-3000:]

    def cpu_seconds(self):
        """CPU time used so far by the worker: its main process and pool processes, all threads
        (the recorder's writer threads included). None where /proc is not available."""
        pids = [self.process.pid]
        try:
            for task in Path(f"/proc/{self.process.pid}/task").iterdir():
                pids += [int(pid) for pid in (task / "children").read_text().split()]
            return sum(process_cpu_seconds(pid) for pid in pids)
        except OSError:
            return None

    def stop(self):
        """Warm shutdown (what a deployment does), then SIGKILL to the worker's group if it hangs."""
        if self.process.poll() is not None:
            return
        try:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        finally:
            if self.process.poll() is None:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def process_cpu_seconds(pid, reaped_children=False):
    """utime + stime of process `pid`; with reaped_children, plus those of its children that have
    exited and been waited for (cutime + cstime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    if reaped_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLOCK_TICKS


def postgres_cpu():
    """{pid: CPU seconds} of every PostgreSQL server process on this machine. The postmaster's
    figure includes its exited children: a backend that served a client who disconnected between
    two readings (a worker that stopped, a publisher that finished) still counts, because the
    postmaster reaps it and the kernel adds its CPU time to the postmaster's cutime and cstime."""
    names, parents = {}, {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
            names[int(stat.parent.name)] = text.split("(", 1)[1].rsplit(")", 1)[0]
            parents[int(stat.parent.name)] = int(text.rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # exited meanwhile
    seconds = {}
    for pid, name in names.items():
        if name != "postgres":
            continue
        try:
            seconds[pid] = process_cpu_seconds(pid, reaped_children=names.get(parents[pid]) != "postgres")
        except (OSError, IndexError, ValueError):
            continue
    return seconds


def cpu_used(before, after):
    """CPU seconds between two postgres_cpu() readings: the difference of their totals. A backend
    that exits in between moves all its time into the postmaster's figure, so the total keeps it;
    one that started in between counts from zero."""
    return sum(after.values()) - sum(before.values())


class TextSearchIndexes:
    """The jobs table's trigram indexes (migration 0017), dropped for a run that measures what the
    recorder costs without them and put back for the next. Found by their operator class, not
    their names, so that a renamed index still counts. Meant for an empty table, where either is
    instant."""

    def __init__(self):
        self.dropped = {}  # name: CREATE INDEX statement

    def keep(self, db, keep):
        """Drop the indexes, or put them back, on psycopg connection `db` (autocommit), whichever
        the next run needs; how many the table has then."""
        if keep:
            for definition in self.dropped.values():
                db.execute(definition)
            self.dropped.clear()
        else:
            for name, definition in db.execute(
                "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'monitors_jobexecution'"
                " AND indexdef LIKE '%gin_trgm_ops%'"
            ).fetchall():
                db.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(name)))
                self.dropped[name] = definition
        return db.execute("SELECT count(*) FROM pg_indexes WHERE tablename = 'monitors_jobexecution'"
                          " AND indexdef LIKE '%gin_trgm_ops%'").fetchone()[0]


TEXT_SEARCH_INDEXES = TextSearchIndexes()


def python_reference_ms(rounds=5):
    """Milliseconds this machine takes for a fixed piece of pure Python (dicts, strings, sorting:
    what rendering a page does most), the best of `rounds`. Benchmarks print it with their figures
    so that runs on different days can be compared: on a shared virtual machine the same code has
    been seen to run twice as slowly from one day to the next."""
    best = None
    for _ in range(rounds):
        started = time.perf_counter()
        rows = [{"id": number, "name": f"task-{number % 97}", "ms": (number * 7919) % 1000} for number in range(20_000)]
        rows.sort(key=lambda row: (row["name"], -row["ms"]))
        "".join(f"<td>{row['name']}</td><td>{row['ms']}</td>" for row in rows)
        elapsed = (time.perf_counter() - started) * 1000
        best = elapsed if best is None else min(best, elapsed)
    return round(best, 1)


def machine_busy_share(seconds=0.5):
    """Share of this machine's CPU time in use over `seconds`, while none of ours runs: another
    workload on the machine skews every figure, so each run notes it. None without /proc."""

    def busy_and_total():
        ticks = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = ticks[3] + ticks[4]  # idle + iowait
        return sum(ticks) - idle, sum(ticks)

    try:
        busy_before, total_before = busy_and_total()
        time.sleep(seconds)
        busy_after, total_after = busy_and_total()
    except (OSError, ValueError, IndexError):
        return None
    return (busy_after - busy_before) / max(total_after - total_before, 1)


def wait_for_tasks(bench, worker, probe_dir, timeout):
    """Poll the probes until the pool processes have finished exactly N tasks.

    Returns when the first task started and the last one finished, and the worker's CPU seconds
    when the first task started (its start-up is not part of any figure)."""
    deadline = time.monotonic() + timeout
    cpu_at_first_task = None
    while True:
        probes = read_probes(probe_dir)
        if probes and cpu_at_first_task is None:
            cpu_at_first_task = worker.cpu_seconds()
        finished = sum(probe[2] for probe in probes)
        if finished >= bench.tasks:
            break
        worker.check_alive()
        if time.monotonic() > deadline:
            raise BenchmarkError(f"only {finished} of {bench.tasks} tasks finished within {timeout:.0f} s:\n{worker.log_tail()}")
        time.sleep(0.01)
    time.sleep(0.01)  # a probe is written as one 24-byte store; read once more to be sure it was whole
    probes = read_probes(probe_dir)
    finished = sum(probe[2] for probe in probes)
    if finished != bench.tasks:
        raise BenchmarkError(f"the worker finished {finished} tasks, {bench.tasks} were published")
    return min(probe[0] for probe in probes if probe[2]), max(probe[1] for probe in probes), cpu_at_first_task


def machine_description(bench):
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    postgres = bench.db.execute("SHOW server_version").fetchone()[0].split()[0]
    redis_version = bench.broker.info("server")["redis_version"]
    return (
        f"{os.cpu_count()} x {cpu}, {platform.system()} {platform.release()}, Python {platform.python_version()}, "
        f"PostgreSQL {postgres}, Redis {redis_version}"
    )


MEASURED_CODE = ("monitors", "dashboard", "demo")


def code_fingerprint():
    """A hash of the measured code (and its migrations): a run is only meaningful if the code it
    measures, and the schema migrated at the start, stayed the same throughout."""
    digest = hashlib.sha256()
    for folder in MEASURED_CODE:
        for path in sorted((ROOT / folder).rglob("*.py")):
            digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def code_version():
    """The commit measured, "+changes" when the measured code differs from it; None without git."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
        changes = subprocess.run(["git", "status", "--porcelain", "--", *MEASURED_CODE], cwd=ROOT, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit.stdout.strip() + ("+changes" if changes.stdout.strip() else "")
