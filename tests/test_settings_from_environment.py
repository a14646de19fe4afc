"""Production settings come from the environment; a malformed value stops start-up, naming it."""

import os
import subprocess
import sys

import pytest

from tests.workers import REPO


def start_django(**environment):
    env = {key: value for key, value in os.environ.items() if key not in ("DATABASE_URL", "CELERY_BROKER_URL")}
    env.update(environment, DJANGO_SETTINGS_MODULE="dashboard.settings")
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); from django.conf import settings; print(settings.DATABASES['default']['ENGINE'], settings.CELERY_BROKER_URL)"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
    )


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("DATABASE_URL", "postgresql://", "DATABASE_URL names no database"),
        ("DATABASE_URL", "mysql://u@h/db", "DATABASE_URL: Jobwatch supports postgresql:// and sqlite://"),
        ("DATABASE_URL", "not a url", "DATABASE_URL"),
        ("CELERY_BROKER_URL", "kafka://h", "CELERY_BROKER_URL='kafka://h': unsupported broker scheme"),
        ("DEBUG", "maybe", "DEBUG='maybe' is not a boolean"),
        ("JOBWATCH_RECORDER_BUFFER_SIZE", "lots", "JOBWATCH_RECORDER_BUFFER_SIZE='lots' is not a whole number"),
    ],
)
def test_it_stops_start_up_naming_the_malformed_variable(name, value, message):
    result = start_django(**{name: value})
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr and message in result.stderr


def test_it_requires_a_secret_key_when_debug_is_off():
    result = start_django(DEBUG="0")
    assert result.returncode != 0 and "SECRET_KEY must be set when DEBUG is off" in result.stderr


def test_it_runs_on_postgresql_and_redis_from_urls_and_hides_no_password():
    result = start_django(DATABASE_URL="postgresql://postgres@127.0.0.1:5432/jobwatch", CELERY_BROKER_URL="redis://127.0.0.1:6379/3")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["django.db.backends.postgresql", "redis://127.0.0.1:6379/3"]


def test_it_defaults_to_the_embedded_sqlite_and_filesystem_broker(tmp_path):
    result = start_django(JOBWATCH_VAR_DIR=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["django.db.backends.sqlite3", "filesystem://"]
