"""Fan-out rules on recorded rows: what must not count as a problem."""

from datetime import timedelta

import pytest
from django.utils import timezone

from monitors.detectors.fanout import duplicates
from monitors.models import JobExecution

pytestmark = pytest.mark.django_db


def test_a_periodic_task_from_beat_is_not_a_duplicate_enqueue():
    now = timezone.now()
    for number in range(5):
        for kind, task in (("beat", "jobwatch.sample_queues"), ("other", "shop.sync")):
            JobExecution.objects.create(task_id=f"{task}-{number}", task_name=task, state="succeeded", payload_hash="same",
                                        origin_kind=kind, enqueued_at=now - timedelta(seconds=15 * number), updated_at=now)
    assert [problem.subject for problem in duplicates(now)] == ["shop.sync"]
