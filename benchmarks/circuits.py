"""What a circuit breaker costs a call: a breaker-wrapped call against the bare call, per store.

    .venv/bin/python benchmarks/circuits.py [--calls 2000] [--processes 4]

In one run, for each store (this process's memory, PostgreSQL, SQLite, Redis):
- a no-op call: the breaker's own cost per call (the bare call is a Python function call);
- an HTTP call to the demo payment gateway on loopback, the cheapest real service call there is:
  the ratio wrapped/bare is the overhead a job sees;
- `--processes` processes calling through the same circuit at once (the shared state is one row
  or one Redis key that every call updates): calls per second through the breaker in total,
  against the same processes making bare calls.
Target: a wrapped gateway call within 2x the bare one with the database store, and the breaker's
own cost under 2 ms per call with PostgreSQL and under 1 ms with Redis.

Uses the database jobwatch_bench_circuits (dropped and recreated) and Redis db 4. Ends with one
line of JSON.
"""

import argparse
import json
import multiprocessing
import os
import platform
import statistics
import sys
import time
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from benchmarks.databases import recreate_database  # noqa: E402

DATABASE = "jobwatch_bench_circuits"
os.environ["DATABASE_URL"] = f"postgresql://postgres@127.0.0.1:5432/{DATABASE}"
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")
# As in production: with DEBUG on, Django keeps every query (and its parameters) in memory.
os.environ["DEBUG"] = "0"
os.environ.setdefault("SECRET_KEY", "benchmark-only")
os.environ["JOBWATCH_RECORDER_ENABLED"] = "0"
REDIS_URL = "redis://127.0.0.1:6379/4"
SQLITE_PATH = REPO / "var" / "bench-circuits.sqlite3"
TARGETS = {"gateway_ratio_database": 2.0, "own_cost_ms_postgresql": 2.0, "own_cost_ms_redis": 1.0}


def setup_django():
    import django
    from django.conf import settings

    from dashboard.env import sqlite_database

    # Before setup, so that Django fills in this database's defaults like the others'.
    settings.DATABASES["bench_sqlite"] = sqlite_database(SQLITE_PATH)
    django.setup()


def migrate():
    from django.core.management import call_command

    SQLITE_PATH.unlink(missing_ok=True)
    call_command("migrate", verbosity=0)
    call_command("migrate", database="bench_sqlite", verbosity=0)


def make_store(kind):
    from monitors.circuits.stores import DatabaseStore, MemoryStore, RedisStore

    if kind == "memory":
        return MemoryStore()
    if kind == "postgresql":
        return DatabaseStore("default")
    if kind == "sqlite":
        return DatabaseStore("bench_sqlite")
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()
    return RedisStore(REDIS_URL)


def per_call_seconds(function, calls):
    started = time.perf_counter()
    for _ in range(calls):
        function()
    return (time.perf_counter() - started) / calls


def measure(kind, gateway_url, calls, rounds=3):
    from demo.gateway_client import charge
    from monitors.circuits import CircuitBreaker

    breaker = CircuitBreaker(f"bench-{kind}", store=make_store(kind), fail_max=5)

    def noop():
        return None

    def wrapped_noop():
        with breaker:
            return None

    def gateway_call():
        return charge(gateway_url, 1, 100)

    def wrapped_gateway_call():
        with breaker:
            return charge(gateway_url, 1, 100)

    wrapped_noop()  # connect, register the circuit
    figures = {name: [] for name in ("bare_noop", "wrapped_noop", "bare_gateway", "wrapped_gateway")}
    for _ in range(rounds):  # interleaved, so that drift hits both sides alike
        figures["bare_noop"].append(per_call_seconds(noop, calls))
        figures["wrapped_noop"].append(per_call_seconds(wrapped_noop, calls))
        figures["bare_gateway"].append(per_call_seconds(gateway_call, calls // 4))
        figures["wrapped_gateway"].append(per_call_seconds(wrapped_gateway_call, calls // 4))
    median = {name: statistics.median(values) for name, values in figures.items()}
    state = breaker.state()
    assert state.state == "closed" and state.consecutive_failures == 0, state
    return {
        "own_cost_ms": round((median["wrapped_noop"] - median["bare_noop"]) * 1000, 4),
        "bare_gateway_ms": round(median["bare_gateway"] * 1000, 3),
        "wrapped_gateway_ms": round(median["wrapped_gateway"] * 1000, 3),
        "gateway_ratio": round(median["wrapped_gateway"] / median["bare_gateway"], 3),
    }


def concurrent_worker(kind, gateway_url, calls, wrapped, start, results):
    setup_django()
    from demo.gateway_client import charge
    from monitors.circuits import CircuitBreaker

    breaker = CircuitBreaker(f"bench-shared-{kind}", store=make_store_no_flush(kind), fail_max=5)
    if wrapped:
        with breaker:
            pass
    start.wait()
    started = time.perf_counter()
    for _ in range(calls):
        if wrapped:
            with breaker:
                charge(gateway_url, 1, 100)
        else:
            charge(gateway_url, 1, 100)
    results.put(time.perf_counter() - started)


def make_store_no_flush(kind):
    from monitors.circuits.stores import DatabaseStore, RedisStore

    return {"postgresql": lambda: DatabaseStore("default"), "sqlite": lambda: DatabaseStore("bench_sqlite"),
            "redis": lambda: RedisStore(REDIS_URL)}[kind]()


def concurrent(kind, gateway_url, processes, calls, wrapped):
    context = multiprocessing.get_context("spawn")
    start, results = context.Barrier(processes + 1), context.Queue()
    workers = [context.Process(target=concurrent_worker, args=(kind, gateway_url, calls, wrapped, start, results))
               for _ in range(processes)]
    for worker in workers:
        worker.start()
    start.wait()
    started = time.perf_counter()
    for _ in workers:
        results.get(timeout=600)
    elapsed = time.perf_counter() - started
    for worker in workers:
        worker.join()
    return processes * calls / elapsed


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls per measurement (gateway calls: a quarter)")
    parser.add_argument("--processes", type=int, default=4, help="processes sharing one circuit")
    options = parser.parse_args()

    recreate_database(DATABASE)
    setup_django()
    migrate()
    from demo.gateway import start as start_gateway

    gateway = start_gateway(port=0)
    try:
        single = {kind: measure(kind, gateway.url, options.calls) for kind in ("memory", "postgresql", "sqlite", "redis")}
        shared = {}
        bare = concurrent("redis", gateway.url, options.processes, options.calls // 4, wrapped=False)
        for kind in ("postgresql", "sqlite", "redis"):
            through = concurrent(kind, gateway.url, options.processes, options.calls // 4, wrapped=True)
            shared[kind] = {"calls_per_s": round(through), "of_bare": round(through / bare, 3)}
        shared["bare_calls_per_s"] = round(bare)
    finally:
        gateway.stop()

    print(f"\n{'store':<12}{'own cost/call':>15}{'bare HTTP call':>16}{'wrapped':>10}{'ratio':>8}")
    for kind, figures in single.items():
        print(f"{kind:<12}{figures['own_cost_ms']:>12.3f} ms{figures['bare_gateway_ms']:>13.3f} ms"
              f"{figures['wrapped_gateway_ms']:>7.3f} ms{figures['gateway_ratio']:>8.2f}")
    print(f"\n{options.processes} processes calling the gateway at once: bare {shared['bare_calls_per_s']} calls/s")
    for kind in ("postgresql", "sqlite", "redis"):
        print(f"  through one {kind} circuit: {shared[kind]['calls_per_s']} calls/s ({shared[kind]['of_bare']:.2f} of bare)")

    met = {
        "gateway_ratio_database": single["postgresql"]["gateway_ratio"] <= TARGETS["gateway_ratio_database"],
        "own_cost_ms_postgresql": single["postgresql"]["own_cost_ms"] <= TARGETS["own_cost_ms_postgresql"],
        "own_cost_ms_redis": single["redis"]["own_cost_ms"] <= TARGETS["own_cost_ms_redis"],
    }
    print(json.dumps({
        "benchmark": "circuits", "date": date.today().isoformat(), "machine": f"{platform.machine()} {os.cpu_count()} cpu",
        "calls": options.calls, "single_caller": single, "shared_circuit": shared, "targets": TARGETS, "met": met,
    }))


if __name__ == "__main__":
    main()
