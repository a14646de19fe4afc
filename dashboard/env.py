"""Reading settings from the environment.

Every helper fails loudly, naming the variable, so that a typo in a deployment stops start-up
instead of silently running with a default (a wrong broker URL that "works" would monitor the
wrong queues).
"""

import json
import os
from urllib.parse import urlsplit

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off", ""}


def env_str(name, default):
    return os.environ.get(name, default)


def env_bool(name, default):
    raw = os.environ.get(name)
    if raw is None:
        return default
    word = raw.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean; use one of 1/0, true/false, yes/no, on/off.")


def env_int(name, default):
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a whole number.") from None


def env_float(name, default):
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a number.") from None


def env_list(name, default):
    raw = os.environ.get(name)
    if raw is None:
        return list(default)
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_header(name, value):
    """An HTTP header name, e.g. X-Forwarded-Proto, as Django's (META key, value) pair:
    ("HTTP_X_FORWARDED_PROTO", "https"); None when unset or empty."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    if not all(part.isalnum() for part in raw.split("-")):
        raise ImproperlyConfigured(f"{name}={raw!r} is not an HTTP header name (e.g. X-Forwarded-Proto).")
    return ("HTTP_" + raw.upper().replace("-", "_"), value)


def env_json(name, default):
    """A JSON object, e.g. JOBWATCH_THRESHOLDS='{"QUEUE_LENGTH": 500}'."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = json.loads(raw)
    except ValueError as error:
        raise ImproperlyConfigured(f"{name} is not valid JSON: {error}") from None
    if not isinstance(value, dict):
        raise ImproperlyConfigured(f"{name} must be a JSON object ({{...}}), not {type(value).__name__}.")
    return value


def env_database(name, default_sqlite_path):
    """One DATABASES entry from a database URL, or SQLite in var/ when unset.

    PostgreSQL gets psycopg 3's connection pool: a worker process running many short jobs then
    reuses connections instead of opening one per job.
    """
    raw = os.environ.get(name)
    if not raw:
        return sqlite_database(default_sqlite_path)
    return database_from_url(name, raw)


def database_from_url(name, raw):
    try:
        config = dj_database_url.parse(raw)
    except Exception as exc:  # the library raises several types for a malformed URL
        raise ImproperlyConfigured(f"{name} is not a valid database URL: {exc}") from None
    engine = config.get("ENGINE", "")
    if engine == "django.db.backends.sqlite3":
        return sqlite_database(config["NAME"])
    if engine != "django.db.backends.postgresql":
        raise ImproperlyConfigured(f"{name}: Jobwatch supports postgresql:// and sqlite:// URLs, not {engine!r}.")
    if not config.get("NAME"):
        raise ImproperlyConfigured(f"{name} names no database (postgresql://user@host:port/DBNAME).")
    config["CONN_MAX_AGE"] = 0  # the pool owns connection lifetime; Django refuses both at once
    config.setdefault("OPTIONS", {})["pool"] = {
        "min_size": 1,
        "max_size": env_int("JOBWATCH_DB_POOL_SIZE", 10),
        "timeout": 10,
    }
    return config


def sqlite_database(path):
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(path),
        "OPTIONS": {
            # The embedded default has a web server, a worker, beat and the demo writing at once:
            # WAL lets readers and one writer proceed together, IMMEDIATE avoids the upgrade
            # deadlock between two deferred transactions, and the timeout waits out a busy writer.
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        },
    }


BROKER_SCHEMES = {"redis", "rediss", "amqp", "amqps", "pyamqp", "filesystem", "memory", "sentinel"}


def env_broker_url(name, default):
    raw = os.environ.get(name)
    if not raw:
        return default
    scheme = urlsplit(raw).scheme
    if scheme not in BROKER_SCHEMES:
        raise ImproperlyConfigured(
            f"{name}={redact_url(raw)!r}: unsupported broker scheme {scheme!r}; "
            f"use redis://, amqp:// or filesystem://."
        )
    return raw


def redact_url(url):
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@")
    return url
