"""Jobwatch's settings: `settings.JOBWATCH` (a dict), every key optional.

Read through `setting(name)` so defaults live in one place and a typo in a key name fails loudly
instead of being ignored.
"""

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

DEFAULTS = {
    # Record jobs at all. Off, the signal handlers return at once (the plain-Celery baseline).
    "RECORDER_ENABLED": True,
    # Events buffered per process before new ones are dropped (and counted): memory stays bounded
    # when the database is slow or down, and a task never waits on it.
    "RECORDER_BUFFER_SIZE": 10_000,
    # Rows per upsert statement, and the longest an event waits before it is written.
    "RECORDER_BATCH_SIZE": 500,
    "RECORDER_FLUSH_INTERVAL": 1.0,
    # The database alias the recorder writes to.
    "RECORDER_DATABASE": "default",
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
    unknown = set(getattr(settings, "JOBWATCH", {})) - set(DEFAULTS)
    if unknown:
        raise ImproperlyConfigured(f"settings.JOBWATCH has unknown keys: {', '.join(sorted(unknown))}")
