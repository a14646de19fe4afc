"""Jobwatch's settings: `settings.JOBWATCH` (a dict), every key optional.

Read through `setting(name)` so defaults live in one place and a typo in a key name fails loudly
instead of being ignored.
"""

import itertools

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

# Detector thresholds (monitors/detectors/). Override any in THRESHOLDS, or per queue / per task /
# per periodic task (beat entry) in QUEUE_THRESHOLDS / TASK_THRESHOLDS / PERIODIC_THRESHOLDS:
# {"reports": {"QUEUE_LENGTH": 10_000}}.
DEFAULT_THRESHOLDS = {
    # Fan-out: an origin's enqueues over the last window against its own baseline before it.
    "FANOUT_WINDOW_SECONDS": 300,
    "FANOUT_BASELINE_SECONDS": 3600,
    "FANOUT_STORM_FACTOR": 5.0,  # this many times its baseline rate…
    "FANOUT_STORM_MIN_PER_MINUTE": 60.0,  # …and at least this many enqueues a minute
    "FANOUT_CEILING_PER_MINUTE": 1000.0,  # a storm whatever the baseline
    # A burst: this many enqueues a second from one model's saves, held over BURST_SECONDS (and
    # FANOUT_STORM_FACTOR times the model's own rate before), however quiet the rest of the window.
    "FANOUT_BURST_PER_SECOND": 50.0,
    "FANOUT_BURST_SECONDS": 10,
    # Saves whose update_fields touch only these fields should not need a job.
    "TRIVIAL_FIELDS": ["last_seen_at", "last_seen", "updated_at", "modified", "modified_at", "last_login",
                       "last_activity", "last_active_at", "last_accessed_at"],
    "TRIVIAL_SAVE_MIN_JOBS": 10,
    # The same task with the same arguments, this many times within the window.
    "DUPLICATE_WINDOW_SECONDS": 300,
    "DUPLICATE_MIN_COPIES": 3,
    # One transaction or request that saved this many rows, each enqueueing.
    "BULK_LOOP_MIN_SAVES": 20,
    # Orphans: jobs of the last ORPHAN_WINDOW; an enqueue whose transaction has not committed
    # after ORPHAN_COMMIT_GRACE_SECONDS was rolled back (a request's transaction lasts well under
    # a second; one still open after the grace is reported once it is over, as "ran before commit").
    "ORPHAN_WINDOW_SECONDS": 3600,
    "ORPHAN_COMMIT_GRACE_SECONDS": 10,
    "ORPHAN_SCAN_MESSAGES": 100_000,
    "IN_TRANSACTION_MIN_JOBS": 5,
    # Backlog (celery-exporter's and Flower users' usual alert rules).
    "QUEUE_LENGTH": 100,
    "QUEUE_LENGTH_SECONDS": 1200,
    "OLDEST_AGE_WARNING": 120,
    "OLDEST_AGE_CRITICAL": 300,
    "GROWTH_SECONDS": 600,
    # A queue an operator paused is reported as paused (info), and as a warning once paused this long.
    "QUEUE_PAUSED_WARNING_SECONDS": 3600,
    "STUCK_AFTER_SECONDS": 1800,
    "FAILURE_RATE": 0.05,
    "FAILURE_RATE_CRITICAL": 0.5,  # work is not getting done: critical
    "FAILURE_RATE_SECONDS": 600,
    "FAILURE_RATE_MIN_JOBS": 20,
    # Circuits: open this long is critical; opening this many times in the span is flapping.
    "CIRCUIT_OPEN_CRITICAL_SECONDS": 300,
    "CIRCUIT_FLAP_COUNT": 3,
    "CIRCUIT_FLAP_SECONDS": 1800,
    # A service failing with no breaker: this many failed jobs of one error and one host within
    # the span.
    "SERVICE_FAILURE_SECONDS": 600,
    "SERVICE_FAILURE_MIN_JOBS": 10,
    # Where no address can be read from the errors: one task's failures of one exception type and
    # status, this share of its finished jobs, are a failing dependency of that task.
    "SERVICE_FAILURE_SHARE": 0.8,
    # Periodic tasks (per entry in PERIODIC_THRESHOLDS, by the entry's name): a run is missed
    # when it was due this long ago and nothing was sent; a run sent and not started this long
    # after is stuck; this many failed runs in a row are failing; a run this many times its usual
    # duration (and at least the minimum) is slow.
    "PERIODIC_GRACE_SECONDS": 60,
    "PERIODIC_NOT_STARTED_SECONDS": 300,
    "PERIODIC_FAILING_RUNS": 3,
    "PERIODIC_SLOW_FACTOR": 3.0,
    "PERIODIC_SLOW_MIN_SECONDS": 10,
}

DEFAULTS = {
    # Record jobs at all. Off, the signal handlers return at once (the plain-Celery baseline).
    "RECORDER_ENABLED": True,
    # Events buffered per process before new ones are dropped (and counted): memory stays bounded
    # when the database is slow or down, and a task never waits on it.
    "RECORDER_BUFFER_SIZE": 10_000,
    # Rows per upsert statement, and the longest an event waits before it is written.
    "RECORDER_BATCH_SIZE": 500,
    "RECORDER_FLUSH_INTERVAL": 0.5,
    # A worker's main process writes its recorder row at least this often, busy or idle; the
    # Workers page calls a worker alive for 3 of these.
    "WORKER_HEARTBEAT_SECONDS": 15.0,
    # The database alias the recorder writes to.
    "RECORDER_DATABASE": "default",
    # A read-only alias (a streaming replica of the one above) the pages, their JSON and the
    # detectors read the job history from; None reads where it is written. Needs the router and
    # the middleware of monitors/replica.py.
    "READ_DATABASE": None,
    # Argument keys whose values are replaced by "[redacted]" (matched without case, "_" or "-",
    # as a substring: "api_key", "X-Api-Key" and "apikey" all match "apikey").
    "REDACT_KEYS": [
        "password", "passwd", "secret", "token", "apikey", "authorization", "cookie",
        "sessionid", "creditcard", "cardnumber", "cvv", "ssn", "privatekey",
    ],
    # Longest string kept from an argument, and most items kept from a list or dict.
    "MAX_VALUE_LENGTH": 1000,
    "MAX_ITEMS": 100,
    "RESULT_MAX_LENGTH": 1000,
    "TRACEBACK_MAX_LENGTH": 20_000,
    # Seconds between queue samples, days raw samples are kept before they are rolled up into
    # 10-minute ones, and days any sample is kept.
    "SAMPLE_INTERVAL": 15,
    "SAMPLE_RAW_DAYS": 2,
    "SAMPLE_RETENTION_DAYS": 400,
    # RabbitMQ's management API, for in-flight counts, queue listing and peek. None: the broker's
    # host and credentials on port 15672, used when it answers. "": never use it.
    "RABBITMQ_MANAGEMENT_URL": None,
    # Detector thresholds: see DEFAULT_THRESHOLDS above.
    "THRESHOLDS": {},
    "QUEUE_THRESHOLDS": {},
    "TASK_THRESHOLDS": {},
    "PERIODIC_THRESHOLDS": {},
    "DETECT_INTERVAL": 30,
    # Circuit breakers (monitors/circuits): where their shared state lives — "database" (the
    # default database), "database:<alias>", or a redis:// URL — and their options: defaults for
    # every circuit, and per circuit by name ({"payment-gateway": {"reset_timeout": 30}}), which
    # win over the options given in code.
    "CIRCUIT_STORE": "database",
    "CIRCUIT_DEFAULTS": {},
    "CIRCUITS": {},
    # Replay and purge (monitors/actions/). A failed job whose recorded arguments were redacted
    # or truncated keeps its full arguments (JobPayload) so that it can be replayed as it was;
    # archived messages and kept arguments are pruned after ARCHIVE_RETENTION_DAYS. Sets larger
    # than ACTION_INLINE_LIMIT run as a background task; larger than ACTION_MAX_ITEMS only with
    # an explicit override.
    "KEEP_FAILED_PAYLOADS": True,
    "ARCHIVE_RETENTION_DAYS": 30,
    "ACTION_INLINE_LIMIT": 500,
    "ACTION_MAX_ITEMS": 100_000,
    "ACTION_BATCH_SIZE": 500,
    # Alerts (monitors/alerts/): how often the alert task runs; how long a finding must hold
    # before it is notified, and its resolve before that is; how often an open incident is
    # notified again; the channels defined in settings ([{"name", "kind": "email" | "webhook" |
    # "slack", "target", "min_severity"}]); a channel's timeout, and how many failures in a row
    # turn it off. DASHBOARD_URL makes links in notifications absolute. With the detectors every
    # 30 s, a problem is notified within 30 + 15 + 10 = 55 s of starting, at worst.
    "ALERT_INTERVAL": 10,
    "ALERT_HOLD_SECONDS": 15,
    "ALERT_RESOLVE_HOLD_SECONDS": 60,
    "ALERT_REPEAT_SECONDS": 4 * 3600,
    "ALERT_CHANNELS": [],
    "CHANNEL_TIMEOUT": 5.0,
    "CHANNEL_MAX_FAILURES": 10,
    "DASHBOARD_URL": "",
    # A periodic task that has not run for this many of its intervals makes the monitor stale.
    "STALE_AFTER_INTERVALS": 3,
    # Every worker looks this often whether Jobwatch's periodic tasks still run, and when they do
    # not (beat dead), one of them raises the alert in beat's place (monitors/alerts/watchdog.py).
    # 0: no watch.
    "WATCHDOG_SECONDS": 30.0,
    # /metrics: with a token, Prometheus sends it as "Authorization: Bearer <token>"; without
    # one, only logged-in staff may read it.
    "METRICS_TOKEN": "",
    # Cancelling a running job: SIGTERM, then SIGKILL this many seconds later if it still runs.
    "CANCEL_GRACE_SECONDS": 10.0,
    # How often each worker checks which of its queues are paused (a pause or resume is also
    # broadcast to the workers at once; this catches a worker the broadcast missed).
    "QUEUE_PAUSE_CHECK_SECONDS": 10.0,
    # Distinct task names (and queue names) /metrics shows as labels; the rest are summed under
    # "(other)" (monitors/web/metric_labels.py). Registered tasks are always shown.
    "METRICS_MAX_LABEL_VALUES": 500,
    # The bounds (seconds) of /metrics' two histograms, celery-exporter's --buckets (runtime) and
    # --queue-wait-buckets, both Prometheus's defaults unless set. The dashboard's own speed pages
    # use fixed buckets of their own (monitors/timing.py). A change applies to jobs counted after
    # it: /metrics shows the buckets set now (Prometheus sees it as a reset of the histogram).
    "METRICS_RUNTIME_BUCKETS": [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0],
    "METRICS_QUEUE_WAIT_BUCKETS": [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0],
    # Seconds between the upkeep tasks: sample roll-up and archive pruning, and history pruning.
    "UPKEEP_INTERVAL": 3600,
    "PRUNE_INTERVAL": 86400,
    # Days of history kept (jobs, circuit transitions, resolved findings), and of the audit log.
    "HISTORY_RETENTION_DAYS": 30,
    "AUDIT_RETENTION_DAYS": 365,
    # PostgreSQL: keep the job history and tallies in day partitions (monitors/partitions.py), read
    # by migration 0016. Off by default: retention becomes dropping a day, but every page plans its
    # queries over some 35 partitions (pages at 10 M jobs measured 2–5× slower, README "Scaling");
    # for histories that a DELETE can no longer prune. To switch later: set it, then
    # `manage.py migrate monitors 0015 && manage.py migrate`.
    "PARTITION_HISTORY": False,
    # PostgreSQL: with the job history partitioned by day (monitors/partitions.py), the upkeep task
    # creates this many days of partitions ahead, so that days without upkeep still write into
    # day partitions rather than the catch-all one.
    "PARTITION_DAYS_AHEAD": 3,
    # References for tasks you cannot decorate: {"task.name": {"arg name or index": "app.Model"}}.
    "RECORD_REFERENCES": {},
}


def setting(name):
    if name not in DEFAULTS:
        raise KeyError(f"unknown Jobwatch setting {name!r}")
    overrides = getattr(settings, "JOBWATCH", {})
    return overrides.get(name, DEFAULTS[name])


def check_settings():
    """Called at start-up: unknown keys in settings.JOBWATCH are mistakes, not options."""
    configured = getattr(settings, "JOBWATCH", {})
    check_keys("settings.JOBWATCH", configured, DEFAULTS)
    check_keys("settings.JOBWATCH['THRESHOLDS']", configured.get("THRESHOLDS", {}), DEFAULT_THRESHOLDS)
    for scope in ("QUEUE_THRESHOLDS", "TASK_THRESHOLDS", "PERIODIC_THRESHOLDS"):
        for name, overrides in configured.get(scope, {}).items():
            check_keys(f"settings.JOBWATCH['{scope}'][{name!r}]", overrides, DEFAULT_THRESHOLDS)
    for name in ("METRICS_RUNTIME_BUCKETS", "METRICS_QUEUE_WAIT_BUCKETS"):
        check_buckets(f"settings.JOBWATCH[{name!r}]", configured.get(name, DEFAULTS[name]))


def check_buckets(where, bounds):
    """Histogram bounds: a non-empty list of positive numbers in increasing order (+Inf is added)."""
    try:
        values = [float(f"{float(bound):.9g}") for bound in bounds]  # as /metrics uses them
    except (TypeError, ValueError):
        raise ImproperlyConfigured(f"{where} must be a list of numbers of seconds, like [0.1, 1, 10]") from None
    finite = all(0 < value < float("inf") for value in values)  # NaN compares false: refused too
    increasing = all(a < b for a, b in itertools.pairwise(values))
    if not values or not finite or not increasing:
        raise ImproperlyConfigured(f"{where} must hold positive, finite numbers of seconds in increasing order "
                                   f"(+Inf is added by itself), not {bounds!r}")


def check_keys(where, given, known):
    unknown = set(given) - set(known)
    if unknown:
        raise ImproperlyConfigured(f"{where} has unknown keys: {', '.join(sorted(unknown))}")
