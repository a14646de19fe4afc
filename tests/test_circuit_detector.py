"""The circuit detector's rules on recorded rows: flapping, and the circuit's state read back from
the database copy when the shared store is away. (Services failing with no breaker: the services
detector, tests/test_error_targets.py.)"""

from datetime import timedelta

import pytest
from django.utils import timezone

from monitors.detectors.circuits import detect
from monitors.models import Circuit, CircuitEvent, JobExecution

pytestmark = pytest.mark.django_db


def test_a_circuit_that_keeps_opening_is_flapping():
    now = timezone.now()
    Circuit.objects.create(name="rates-api", state="closed", policy={"reset_timeout": 10})
    for minutes in (25, 15, 5):
        CircuitEvent.objects.create(circuit="rates-api", at=now - timedelta(minutes=minutes), from_state="closed",
                                    to_state="open", cause="5 consecutive failures")
    [problem] = detect(now)
    assert (problem.kind, problem.subject, problem.count) == ("circuit_flapping", "rates-api", 3)


def test_an_open_circuit_is_reported_with_the_jobs_waiting_behind_it():
    now = timezone.now()
    Circuit.objects.create(name="gateway", state="open", opened_at=now - timedelta(minutes=10), changed_at=now - timedelta(minutes=10),
                           last_error_type="ConnectionError", last_error="refused", policy={"reset_timeout": 60})
    CircuitEvent.objects.create(circuit="gateway", at=now - timedelta(minutes=10), from_state="closed", to_state="open", cause="5 consecutive failures")
    for number in range(3):
        JobExecution.objects.create(task_id=f"w{number}", task_name="shop.charge", state="waiting", circuit="gateway",
                                    queue="payments", updated_at=now, enqueued_at=now - timedelta(minutes=9 - number))
    [problem] = detect(now)
    assert (problem.kind, problem.severity, problem.count) == ("circuit_open", "critical", 3)  # open 10 min > 5 min
    assert problem.evidence["waiting_by_queue"] == {"payments": 3}
    assert problem.evidence["open_seconds"] == pytest.approx(600, abs=1)
