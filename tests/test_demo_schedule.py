"""The demo shop's own periodic tasks: scheduled only where rundemo turns them on (so this site's
tests and benchmarks see Jobwatch's entries alone), and the stock import fails — a real refused
connection — only in its partner feed's down minutes."""

import os
import subprocess
import sys
import time

import pytest

from demo import tasks
from tests.workers import REPO

LIST_SCHEDULE = ("import django; django.setup(); from dashboard.celery import app; "
                 "print(' | '.join(sorted(app.conf.beat_schedule)))")


def schedule_names(**env):
    clean = {key: value for key, value in os.environ.items() if not key.startswith(("DEMO_", "DJANGO_"))}
    result = subprocess.run([sys.executable, "-c", LIST_SCHEDULE], cwd=REPO, capture_output=True, text=True, timeout=60,
                            env={**clean, "DJANGO_SETTINGS_MODULE": "dashboard.settings", **env})
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().split(" | ")


def test_the_shops_entries_are_scheduled_only_when_rundemo_asks():
    with_demo = schedule_names(DEMO_BEAT_SCHEDULE="1")
    assert {"partner stock import", "exchange rates", "daily sales report", "jobwatch.run_detectors"} <= set(with_demo)
    assert not {"partner stock import", "exchange rates"} & set(schedule_names())
    assert "jobwatch.run_detectors" in schedule_names()


@pytest.mark.django_db
def test_the_stock_import_fails_in_the_feeds_down_minutes_only(monkeypatch):
    def at_minute(minute):
        monkeypatch.setattr(tasks.time, "gmtime", lambda *_: time.struct_time((2026, 11, 30, 12, minute, 0, 0, 334, 0)))

    at_minute(7)
    with pytest.raises(ConnectionRefusedError):
        tasks.import_partner_stock()
    for healthy in (0, 4, 12, 19, 20):
        at_minute(healthy)
        assert tasks.import_partner_stock() == 0
