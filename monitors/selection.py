"""Which jobs an action applies to: chosen ids, or everything matching a filter, in the operator's
words. The same filter comes from the dashboard (query string), the admin (the changelist's
selection) and the command line (options), and is stored as given in the audit log.

    JobSelection.from_filter({"task": "shop.charge", "state": "failed", "since": "2h"})
    JobSelection.from_ids(["3f2c…", "9a1e…"])
    JobSelection.from_finding(42)      # the jobs a finding's evidence names (e.g. its orphans)

A filter the code does not understand is an error with the reason, never "match everything".
"""

import re
from dataclasses import dataclass, field
from datetime import timedelta

from django.utils import timezone
from django.utils.dateparse import parse_datetime

from monitors.models import Finding, JobExecution, JobState, OriginKind

FILTER_KEYS = {
    "task": "task name, exactly",
    "queue": "queue name",
    "state": "one of " + ", ".join(JobState.values),
    "exception": "exception type, e.g. ConnectionError or demo.models.Order.DoesNotExist",
    "since": "enqueued after: an ISO time or an age like 30m, 2h, 7d",
    "until": "enqueued before: an ISO time or an age",
    "origin": "origin kind: " + ", ".join(OriginKind.values),
    "receiver": "the receiver or function that enqueued it",
    "worker": "worker hostname",
    "save": "the save that enqueued it (the origin's save id)",
    "circuit": "the service circuit it calls through or waits on",
    "text": "text in the arguments or the error message",
}
AGE = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d)$")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# The evidence key in which a detector lists every job a finding is about (the orphans' ids);
# "sample_job_ids" are only examples and are not a selection.
EVIDENCE_ID_KEYS = ("job_ids",)


class BadSelection(ValueError):
    """The filter or ids cannot be understood; the message says which part and why."""


@dataclass
class JobSelection:
    filters: dict = field(default_factory=dict)
    ids: list = field(default_factory=list)
    finding: int | None = None

    @classmethod
    def from_filter(cls, filters):
        cleaned = {key: str(value).strip() for key, value in (filters or {}).items() if str(value or "").strip()}
        unknown = sorted(set(cleaned) - set(FILTER_KEYS))
        if unknown:
            raise BadSelection(f"unknown filter {', '.join(unknown)}; filters are: {', '.join(FILTER_KEYS)}")
        if not cleaned:
            raise BadSelection("an empty filter would select every job: give at least one filter, or ids")
        selection = cls(filters=cleaned)
        selection.queryset()  # validate now, so that a bad value fails before anything is logged as done
        return selection

    @classmethod
    def from_ids(cls, ids):
        ids = [str(task_id).strip() for task_id in ids if str(task_id).strip()]
        if not ids:
            raise BadSelection("no job ids given")
        return cls(ids=list(dict.fromkeys(ids)))

    @classmethod
    def from_finding(cls, finding_id):
        try:
            finding = Finding.objects.get(pk=int(finding_id))
        except (ValueError, Finding.DoesNotExist) as error:
            raise BadSelection(f"no finding {finding_id!r}") from error
        ids = finding_task_ids(finding)
        if not ids:
            raise BadSelection(f"finding {finding.pk} ({finding.title}) names no jobs")
        return cls(ids=ids, finding=finding.pk)

    def describe(self):
        """For the audit log: the filter or ids, as given."""
        if self.ids:
            described = {"ids": self.ids, "count": len(self.ids)}
            if self.finding:
                described["finding"] = self.finding
            return described
        return {"filter": self.filters}

    @classmethod
    def from_description(cls, described):
        """The selection an audit log entry describes (a background run reads it back)."""
        if described.get("ids"):
            return cls(ids=list(described["ids"]), finding=described.get("finding"))
        return cls.from_filter(described.get("filter") or {})

    def queryset(self, discarded=False):
        """The selected jobs; those an operator discarded from the history only with
        discarded=True (and then only those)."""
        jobs = JobExecution.objects.filter(discarded_at__isnull=not discarded)
        if self.ids:
            return jobs.filter(task_id__in=self.ids)
        for key, value in self.filters.items():
            jobs = apply_filter(jobs, key, value)
        return jobs


def apply_filter(jobs, key, value):
    if key == "task":
        return jobs.filter(task_name=value)
    if key == "queue":
        return jobs.filter(queue=value)
    if key == "state":
        if value not in JobState.values:
            raise BadSelection(f"state {value!r} is not one of {', '.join(JobState.values)}")
        return jobs.filter(state=value)
    if key == "exception":
        # "DoesNotExist" matches "demo.models.Order.DoesNotExist": the type's last part is enough.
        return jobs.filter(exception_type__in=[value]) | jobs.filter(exception_type__endswith=f".{value}")
    if key == "since":
        return jobs.filter(enqueued_at__gte=moment(value, key))
    if key == "until":
        return jobs.filter(enqueued_at__lt=moment(value, key))
    if key == "origin":
        if value not in OriginKind.values:
            raise BadSelection(f"origin {value!r} is not one of {', '.join(OriginKind.values)}")
        return jobs.filter(origin_kind=value)
    if key == "receiver":
        return jobs.filter(origin_receiver=value)
    if key == "worker":
        return jobs.filter(worker=value)
    if key == "save":
        return jobs.filter(origin_save=value)
    if key == "circuit":
        return jobs.filter(circuit=value)
    if key == "text":
        return jobs.filter(exception_message__icontains=value) | jobs.filter(args__icontains=value)
    raise BadSelection(f"unknown filter {key!r}")


def moment(value, key):
    age = AGE.match(value.lower())
    if age:
        return timezone.now() - timedelta(seconds=float(age.group(1)) * UNITS[age.group(2)])
    parsed = parse_datetime(value)
    if parsed is None:
        raise BadSelection(f"{key}={value!r} is neither an ISO time (2026-11-23T10:00) nor an age (30m, 2h, 7d)")
    return parsed if parsed.tzinfo else timezone.make_aware(parsed)


def finding_task_ids(finding):
    ids = []
    for key in EVIDENCE_ID_KEYS:
        value = (finding.evidence or {}).get(key)
        if isinstance(value, list):
            ids += [str(item) for item in value if item]
        elif isinstance(value, dict):
            for items in value.values():
                if isinstance(items, list):
                    ids += [str(item) for item in items if item]
    return list(dict.fromkeys(ids))
