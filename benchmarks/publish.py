"""Publish N no-op tasks with one benchmark mode's settings; print one line of JSON with timings.

benchmarks/recording.py runs this in a subprocess with that mode's environment, so the publisher
records ENQUEUED events (or not) exactly as a web process with those settings would.
"""

import json
import sys
import time


def main():
    count = int(sys.argv[1])
    import django

    django.setup()
    import dashboard.celery  # noqa: F401  (the app the site publishes with)
    from demo.tasks import noop
    from monitors.recording import signals

    started = time.perf_counter()
    for _ in range(count):
        noop.delay()
    publish_seconds = time.perf_counter() - started
    # What the recorder still holds; a web process would write it in the background later.
    signals.flush_at_shutdown()
    flush_seconds = time.perf_counter() - started - publish_seconds
    print(json.dumps({"published": count, "publish_seconds": publish_seconds, "flush_seconds": flush_seconds}))


if __name__ == "__main__":
    main()
