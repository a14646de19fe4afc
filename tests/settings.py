"""Settings for the test suite: the site's settings on real PostgreSQL and Redis.

bin/test exports these variables; the defaults here let `pytest` run on its own on a machine with
the services on their usual ports. pytest-django creates and drops the test database itself.
"""

import os

os.environ.setdefault("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/jobwatch")
os.environ.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/14")
os.environ.setdefault("JOBWATCH_VAR_DIR", os.path.join(os.path.dirname(os.path.dirname(__file__)), "var", "test"))

from dashboard.settings import *  # noqa: E402,F403

JOBWATCH = {
    **JOBWATCH,  # noqa: F405
    # Tests wait for rows to appear: write them promptly.
    "RECORDER_FLUSH_INTERVAL": 0.1,
}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
