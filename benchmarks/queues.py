"""Queue inspection on a Redis queue of 1,000,000 messages.

    .venv/bin/python benchmarks/queues.py [--messages 1000000] [--repeat 20]

Times, beside the raw Redis commands that are the physical floor:
- depth + oldest age (RedisBroker.stats) vs LLEN + LINDEX;
- one peek page of 50 decoded messages at the head and at the middle vs LRANGE;
- a full streaming scan of every message, decoded (what the orphan detector reads), with the
  scanning process's peak memory, vs LRANGE alone.
Targets: depth + age < 20 ms, a peek page < 100 ms, the scan < 30 s within 200 MB.
Ends with one line of JSON.
"""

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import uuid
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")
os.environ["JOBWATCH_RECORDER_ENABLED"] = "0"  # the benchmark publishes; it should not record

REDIS_URL = "redis://127.0.0.1:6379/3"
QUEUE = "jobwatch-bench"
TARGETS = {"depth_age_ms": 20, "peek_ms": 100, "scan_s": 30, "scan_peak_mb": 200}


def setup_django():
    import django

    django.setup()


def app():
    from celery import Celery

    celery = Celery("bench", broker=REDIS_URL, set_as_current=False)
    celery.conf.task_serializer = "json"
    return celery


def fill(count):
    """`count` distinct, realistic messages: one real Celery envelope, its ids varied."""
    import redis

    from monitors.recording.events import PUBLISHED_HEADER

    client = redis.Redis.from_url(REDIS_URL)
    client.delete(QUEUE)
    celery = app()
    template_id = str(uuid.uuid4())
    celery.send_task("shop.tasks.send_invoice", args=[12345], kwargs={"order_id": 987, "note": "x" * 100},
                     queue=QUEUE, task_id=template_id, headers={PUBLISHED_HEADER: time.time()})
    template = client.rpop(QUEUE).decode()
    started = time.perf_counter()
    batch = 10_000
    for start in range(0, count, batch):
        with client.pipeline(transaction=False) as pipe:
            pipe.lpush(QUEUE, *[template.replace(template_id, str(uuid.uuid4())) for _ in range(min(batch, count - start))])
            pipe.execute()
    return time.perf_counter() - started


def timed(operation, repeat):
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        operation()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples), max(samples)


def measure_reads(repeat, count):
    import redis

    from monitors.brokers.redis import RedisBroker

    client = redis.Redis.from_url(REDIS_URL)
    broker = RedisBroker(app())

    def floor_depth_age():
        with client.pipeline(transaction=False) as pipe:
            pipe.llen(QUEUE)
            pipe.lindex(QUEUE, -1)
            pipe.execute()

    def depth_age():
        stats = broker.stats([QUEUE])[QUEUE]
        assert stats.depth == count and stats.oldest_published_at is not None

    def peek_head():
        assert len(broker.peek(QUEUE, 0, 50)) == 50

    def peek_middle():
        assert len(broker.peek(QUEUE, count // 2, 50)) == 50

    return {
        "floor_depth_age_ms": timed(floor_depth_age, repeat),
        "depth_age_ms": timed(depth_age, repeat),
        "floor_page_ms": timed(lambda: client.lrange(QUEUE, -50, -1), repeat),
        "peek_head_ms": timed(peek_head, repeat),
        "peek_middle_ms": timed(peek_middle, repeat),
    }


def scan_in_child(decode):
    """Run one scan in a fresh process so its peak memory is the scan's own."""
    result = subprocess.run(
        [sys.executable, __file__, "--scan-child", "decoded" if decode else "raw"],
        capture_output=True, text=True, check=True, env={**os.environ},
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def scan_child(mode):
    setup_django()
    from monitors.brokers.redis import RedisBroker

    broker = RedisBroker(app())
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    count = undecodable = 0
    for message in broker.scan(QUEUE, decode=(mode == "decoded")):
        count += 1
        if mode == "decoded" and not message.decodable:
            undecodable += 1
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"messages": count, "undecodable": undecodable, "seconds": seconds,
                      "peak_mb": peak / 1024, "growth_mb": (peak - baseline) / 1024}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--scan-child", choices=["raw", "decoded"], help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.scan_child:
        return scan_child(options.scan_child)

    setup_django()
    print(f"Filling {QUEUE} on {REDIS_URL} with {options.messages:,} messages…", flush=True)
    fill_seconds = fill(options.messages)
    reads = measure_reads(options.repeat, options.messages)
    raw_scan = scan_in_child(decode=False)
    scan = scan_in_child(decode=True)
    assert scan["messages"] == options.messages and scan["undecodable"] == 0

    print(f"\n{'what':<34} {'median':>10} {'worst':>10} {'floor':>10} {'x floor':>8}")
    rows = [
        ("depth + oldest age", reads["depth_age_ms"], reads["floor_depth_age_ms"]),
        ("peek page of 50 (head)", reads["peek_head_ms"], reads["floor_page_ms"]),
        ("peek page of 50 (middle)", reads["peek_middle_ms"], reads["floor_page_ms"]),
    ]
    for name, (median, worst), (floor, _) in rows:
        print(f"{name:<34} {median:>8.2f}ms {worst:>8.2f}ms {floor:>8.2f}ms {median / floor:>8.1f}")
    print(f"{'full scan, decoded':<34} {scan['seconds']:>9.1f}s {'':>10} {raw_scan['seconds']:>9.1f}s {scan['seconds'] / raw_scan['seconds']:>8.1f}")
    print(f"scan peak memory: {scan['peak_mb']:.0f} MB (grew {scan['growth_mb']:.0f} MB while scanning); fill took {fill_seconds:.0f}s")

    figures = {
        "benchmark": "queues",
        "messages": options.messages,
        "depth_age_ms": round(reads["depth_age_ms"][0], 2),
        "depth_age_floor_ms": round(reads["floor_depth_age_ms"][0], 2),
        "peek_head_ms": round(reads["peek_head_ms"][0], 2),
        "peek_middle_ms": round(reads["peek_middle_ms"][0], 2),
        "peek_floor_ms": round(reads["floor_page_ms"][0], 2),
        "scan_s": round(scan["seconds"], 1),
        "scan_floor_s": round(raw_scan["seconds"], 1),
        "scan_peak_mb": round(scan["peak_mb"]),
        "targets": TARGETS,
        "met": {
            "depth_age": reads["depth_age_ms"][0] < TARGETS["depth_age_ms"],
            "peek": max(reads["peek_head_ms"][0], reads["peek_middle_ms"][0]) < TARGETS["peek_ms"],
            "scan": scan["seconds"] < TARGETS["scan_s"] and scan["peak_mb"] < TARGETS["scan_peak_mb"],
        },
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
    }
    import redis

    redis.Redis.from_url(REDIS_URL).delete(QUEUE)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
