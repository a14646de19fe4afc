"""Converting an existing history to day partitions: how long `manage.py migrate` takes on a
filled plain job table (migration 0016: the rows copied into a new partitioned table and its
indexes built, in one transaction while the recorder's writes wait), then the rest of the
upgrade (0017: the trigram indexes of exact text search, built on every day partition), and the
way back (`migrate monitors 0015`). The baseline, in the same run on the same rows, is the floor
of any copy: `CREATE TABLE … AS SELECT *` of the job table, no index.

    .venv/bin/python benchmarks/converting.py                  # 1,000,000 jobs over 30 days (~8 min)
    .venv/bin/python benchmarks/converting.py --jobs 100000    # a quick look

One database (jobwatch_bench_convert) is migrated to 0015, the plain table of the release before
partitions, and filled by the server (benchmarks/pruning.py's rows: arguments, a twentieth failed
with a traceback), over `--days` days. Each step runs `migrate` in a process of its own, timed
after Django has started. Target: the conversion (0016) under 60 s per million jobs on this
machine, i.e. a 10 M history converted in 10 minutes of writes waiting. Ends with one line of JSON.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.dashboard_data import database_url  # noqa: E402
from benchmarks.databases import recreate_database  # noqa: E402
from benchmarks.pruning import BEFORE_PARTITIONS, DAY, django_env, fill, manage  # noqa: E402

NAME = "jobwatch_bench_convert"
PARTITIONED = "0016_history_partitioned_by_day"
TARGET_SECONDS_PER_MILLION = 60.0

MIGRATE = """
import json, sys, time
import django
django.setup()
from django.core.management import call_command
from django.db import connection
started = time.perf_counter()
call_command("migrate", *sys.argv[1:], verbosity=0, skip_checks=True)
seconds = time.perf_counter() - started
with connection.cursor() as cursor:
    cursor.execute("SELECT count(*) FROM monitors_jobexecution")
    rows = cursor.fetchone()[0]
    cursor.execute("SELECT count(*) FROM pg_inherits WHERE inhparent = 'monitors_jobexecution'::regclass")
    partitions = cursor.fetchone()[0]
print(json.dumps({"seconds": seconds, "rows": rows, "partitions": partitions}))
"""


def migrate(*arguments):
    done = subprocess.run([sys.executable, "-c", MIGRATE, *arguments], cwd=ROOT, env=django_env(NAME), check=True,
                          capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def bare_copy_seconds():
    import psycopg

    with psycopg.connect(database_url(NAME), autocommit=True) as db:
        db.execute("CHECKPOINT")
        started = time.perf_counter()
        db.execute("CREATE TABLE bench_bare_copy AS SELECT * FROM monitors_jobexecution")
        seconds = time.perf_counter() - started
        db.execute("DROP TABLE bench_bare_copy")
        db.execute("CHECKPOINT")
    return seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=1_000_000, help="jobs in the plain table (default 1,000,000)")
    parser.add_argument("--days", type=int, default=30, help="days they were enqueued over (default 30)")
    args = parser.parse_args()

    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    first_day = today - args.days * DAY
    started = time.perf_counter()
    recreate_database(NAME)
    manage(NAME, "migrate")
    manage(NAME, "migrate", "monitors", BEFORE_PARTITIONS)  # the plain table of the release before
    size = fill(NAME, first_day, args.jobs - args.jobs // args.days, args.jobs // args.days, with_partitions=False,
                span=timedelta(days=args.days - 1))
    print(f"{args.jobs:,} jobs over {args.days} days written in {time.perf_counter() - started:.0f} s, plain table and "
          f"indexes {size / 2**20:,.0f} MiB", flush=True)

    bare = bare_copy_seconds()
    print(f"bare copy (CREATE TABLE AS SELECT *, no index): {bare:.1f} s", flush=True)
    forward = migrate("monitors", PARTITIONED)
    assert forward["rows"] == args.jobs and forward["partitions"] >= args.days, forward
    print(f"0015 → 0016 (to day partitions): {forward['seconds']:.1f} s, {forward['partitions']} partitions", flush=True)
    rest = migrate()
    print(f"0016 → newest (text-search indexes and the rest): {rest['seconds']:.1f} s", flush=True)
    back = migrate("monitors", BEFORE_PARTITIONS)
    assert back["rows"] == args.jobs and back["partitions"] == 0, back
    print(f"newest → 0015 (back to a plain table): {back['seconds']:.1f} s", flush=True)

    millions = args.jobs / 1_000_000
    per_million = forward["seconds"] / millions
    print(f"\nconverting: {per_million:.0f} s per million jobs ({forward['seconds'] / bare:.1f}x the bare copy of the rows); "
          f"the whole upgrade from 0015 {(forward['seconds'] + rest['seconds']) / millions:.0f} s per million; "
          f"target {TARGET_SECONDS_PER_MILLION:.0f} s per million: {'met' if per_million <= TARGET_SECONDS_PER_MILLION else 'missed'}")
    print(json.dumps({
        "benchmark": "converting", "date": date.today().isoformat(), "machine": f"{platform.node()} ({os.cpu_count()} cpus)",
        "jobs": args.jobs, "days": args.days, "table_mib": round(size / 2**20),
        "bare_copy_seconds": round(bare, 2), "to_partitions_seconds": round(forward["seconds"], 2),
        "rest_of_upgrade_seconds": round(rest["seconds"], 2), "back_to_plain_seconds": round(back["seconds"], 2),
        "partitions": forward["partitions"], "over_bare_copy": round(forward["seconds"] / bare, 2),
        "seconds_per_million": round(per_million, 1),
        "targets": {"seconds_per_million": TARGET_SECONDS_PER_MILLION}, "met": per_million <= TARGET_SECONDS_PER_MILLION,
    }))


if __name__ == "__main__":
    main()
