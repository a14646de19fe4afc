"""Settings for benchmarks/recording.py: the site's settings plus what one benchmark mode needs.

JOBWATCH_BENCH_MODE picks the mode, and is the only thing that differs between them:
- plain:    Jobwatch's recorder off, no result backend (Celery as it comes);
- recorder: Jobwatch's recorder on, writing to the database;
- no-search: the same (recording.py drops the text-search indexes for it);
- peer:     recorder off, django-celery-results storing every result with result_extended.
"""

import os

from django.core.exceptions import ImproperlyConfigured

from dashboard.settings import *  # noqa: F403
from dashboard.settings import INSTALLED_APPS, JOBWATCH

MODES = ("plain", "recorder", "no-search", "peer")
BENCH_MODE = os.environ.get("JOBWATCH_BENCH_MODE", "")
if BENCH_MODE not in MODES:
    raise ImproperlyConfigured(f"JOBWATCH_BENCH_MODE={BENCH_MODE!r}: use one of {', '.join(MODES)}.")

# As in production: with DEBUG on, Django keeps every query in memory (the peer makes several per
# task) and Celery warns that this leaks in a worker.
DEBUG = False

INSTALLED_APPS = [*INSTALLED_APPS, "benchmarks"]
JOBWATCH = {**JOBWATCH, "RECORDER_ENABLED": BENCH_MODE in ("recorder", "no-search")}
CELERY_RESULT_BACKEND = None
# Celery closes every database connection (and, with psycopg's pool, the pool) before and after
# each task unless told to reuse them; recording.py --reuse-db-connections sets this in every mode.
if os.environ.get("JOBWATCH_BENCH_DB_REUSE_MAX"):
    CELERY_DB_REUSE_MAX = int(os.environ["JOBWATCH_BENCH_DB_REUSE_MAX"])
if BENCH_MODE == "peer":
    INSTALLED_APPS.append("django_celery_results")
    CELERY_RESULT_BACKEND = "django-db"
    CELERY_RESULT_EXTENDED = True
