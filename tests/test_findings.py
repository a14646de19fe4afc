"""The findings' lifecycle and the thresholds' settings."""

from datetime import timedelta

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings
from django.utils import timezone

from monitors import detectors
from monitors.circuits import breaker
from monitors.conf import check_settings
from monitors.detectors.base import Problem, threshold
from monitors.detectors.lifecycle import record_problems
from monitors.models import Finding

pytestmark = pytest.mark.django_db


def problem(count=3, severity="warning"):
    return Problem(kind="queue_too_long", subject="mail", severity=severity, title=f"{count} waiting", explanation="why", evidence={"n": count}, count=count)


def test_a_problem_opens_updates_and_resolves_one_finding_and_reopens_as_a_new_one():
    now = timezone.now()
    opened = record_problems("backlog", [problem()], now).opened
    assert len(opened) == 1 and opened[0].status == "open"

    updated = record_problems("backlog", [problem(count=9, severity="critical")], now + timedelta(seconds=30)).updated
    assert [(f.count, f.severity, f.first_seen, f.last_seen) for f in updated] == [(9, "critical", now, now + timedelta(seconds=30))]

    resolved = record_problems("backlog", [], now + timedelta(minutes=1)).resolved
    assert resolved[0].resolved_at == now + timedelta(minutes=1)

    record_problems("backlog", [problem()], now + timedelta(minutes=2))
    assert list(Finding.objects.order_by("id").values_list("status", flat=True)) == ["resolved", "open"]


def test_a_detector_only_resolves_its_own_findings():
    now = timezone.now()
    record_problems("backlog", [problem()], now)
    record_problems("fanout", [], now)
    assert Finding.objects.get().status == "open"


def test_a_failing_detector_leaves_its_findings_open(monkeypatch):
    now = timezone.now()
    record_problems("backlog", [problem()], now)

    def broken(now):
        raise RuntimeError("database hiccup")

    monkeypatch.setitem(detectors.DETECTORS, "backlog", broken)
    assert "backlog" not in detectors.run_detectors(["backlog"], now=now)
    assert Finding.objects.get().status == "open"


@override_settings(JOBWATCH={"THRESHOLDS": {"QUEUE_LENGTH": 500}, "QUEUE_THRESHOLDS": {"reports": {"QUEUE_LENGTH": 10_000}},
                             "TASK_THRESHOLDS": {"shop.flaky": {"FAILURE_RATE": 0.5}}})
def test_thresholds_are_overridden_globally_per_queue_and_per_task():
    assert threshold("QUEUE_LENGTH") == 500
    assert threshold("QUEUE_LENGTH", queue="reports") == 10_000
    assert threshold("FAILURE_RATE", task="shop.flaky") == 0.5
    assert threshold("FAILURE_RATE", task="shop.other") == 0.05


@pytest.mark.parametrize("jobwatch, message", [
    ({"THRESHOLDS": {"QUEUE_LENTGH": 1}}, "THRESHOLDS'] has unknown keys: QUEUE_LENTGH"),
    ({"QUEUE_THRESHOLDS": {"mail": {"OLDEST_AGE": 1}}}, "['QUEUE_THRESHOLDS']['mail'] has unknown keys: OLDEST_AGE"),
    ({"SAMPLE_INTERVALS": 5}, "settings.JOBWATCH has unknown keys: SAMPLE_INTERVALS"),
])
def test_a_mistyped_setting_stops_start_up(jobwatch, message):
    with override_settings(JOBWATCH=jobwatch), pytest.raises(ImproperlyConfigured, match=message.replace("[", r"\[").replace("]", r"\]")):
        check_settings()


@pytest.mark.parametrize("jobwatch, message", [
    ({"CIRCUIT_DEFAULTS": {"fail_maximum": 3}}, "['CIRCUIT_DEFAULTS'] has unknown keys: fail_maximum"),
    ({"CIRCUITS": {"gateway": {"fail_max": 0}}}, "['CIRCUITS']['gateway']: "),
])
def test_a_mistyped_circuit_setting_stops_start_up(jobwatch, message):
    with override_settings(JOBWATCH=jobwatch), pytest.raises(ImproperlyConfigured, match=message.replace("[", r"\[").replace("]", r"\]")):
        breaker.check_settings()
