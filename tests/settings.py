"""Settings for the test suite: the site's settings on real PostgreSQL and Redis.

The defaults here let `pytest` run on a machine with the services on their usual ports;
DATABASE_URL and CELERY_BROKER_URL in the environment point it elsewhere. pytest-django creates and drops the test database itself.
"""

import importlib.util
import os

os.environ.setdefault("JOBWATCH_VAR_DIR", os.path.join(os.path.dirname(os.path.dirname(__file__)), "var", "test"))

from dashboard.env import database_from_url, sqlite_database  # noqa: E402
from dashboard.settings import *  # noqa: E402,F403

# Neither is exported as an environment variable: worker processes started by the tests get
# exactly the environment a test gives them. Also, Celery lets CELERY_BROKER_URL in the
# environment override the broker of every app in the process, the tests' own ad-hoc apps too.
DATABASES = {
    "default": database_from_url("DATABASE_URL", os.environ.get("DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/jobwatch"),
}
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL") or "redis://127.0.0.1:6379/14"
if not CELERY_BROKER_URL.startswith("filesystem://"):
    CELERY_BROKER_TRANSPORT_OPTIONS = {}
    CELERY_BROKER_TRANSPORT = None

JOBWATCH = {
    **JOBWATCH,  # noqa: F405
    # Tests wait for rows to appear: write them promptly (unless a test says otherwise).
    "RECORDER_FLUSH_INTERVAL": float(os.environ.get("JOBWATCH_RECORDER_FLUSH_INTERVAL", 0.1)),
    # The suite runs on the day-partitioned history (the plain table is the one every release before
    # had, and SQLite's): the recorder, pages, actions and retention are tested on both that way.
    "PARTITION_HISTORY": True,
    "WORKER_HEARTBEAT_SECONDS": float(os.environ.get("JOBWATCH_TEST_HEARTBEAT_SECONDS", 15)),
    "QUEUE_PAUSE_CHECK_SECONDS": float(os.environ.get("JOBWATCH_TEST_PAUSE_CHECK_SECONDS", 10)),
    # Jobwatch's own schedule on a test's time scale where a test asks (the watch on beat).
    **{name: float(os.environ[f"JOBWATCH_TEST_{name}"]) for name in ("DETECT_INTERVAL", "ALERT_INTERVAL",
                                                                     "SAMPLE_INTERVAL", "WATCHDOG_SECONDS")
       if os.environ.get(f"JOBWATCH_TEST_{name}")},
    # The demo's payment gateway circuit on a test's time scale: opens after 3 failures, lets 2
    # trial calls through after a 4-second cool-down.
    "CIRCUITS": {"payment-gateway": {"fail_max": 3, "reset_timeout": 4, "trial_calls": 2, "wait_jitter": 0.25},
                 **JOBWATCH["CIRCUITS"]},  # noqa: F405
}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# A second, SQLite database: the recorder's SQL must give the same rows on the embedded default.
DATABASES["embedded"] = sqlite_database(VAR_DIR / "embedded-tests.sqlite3")  # noqa: F405
# A file, as in production, not Django's in-memory test database: its shared cache answers
# concurrent writers with "table is locked" at once instead of waiting for the lock.
# Named after the PostgreSQL test database, so that two runs against two databases (say, two
# checkouts) do not share it — the first to finish would delete it under the other.
DATABASES["embedded"]["TEST"] = {"NAME": str(VAR_DIR / f"test-embedded-{DATABASES['default']['NAME']}.sqlite3")}  # noqa: F405

# django-celery-beat's table of periodic tasks, where it installs: its releases lag Django's, so
# that is the oldest supported pair (bin/test); its tests skip elsewhere.
if importlib.util.find_spec("django_celery_beat"):
    INSTALLED_APPS = [*INSTALLED_APPS, "django_celery_beat"]  # noqa: F405
