"""Turning a detector's problems into findings: open the new ones, update the ones still seen,
resolve the ones gone. Running it twice with the same problems and `now` changes nothing."""

from dataclasses import dataclass

from django.db import IntegrityError, transaction

from monitors.models import Finding

UPDATED_FIELDS = ("severity", "title", "explanation", "evidence", "count", "fix", "keys", "links", "last_seen")


@dataclass
class Outcome:
    opened: list
    updated: list
    resolved: list


def record_problems(detector, problems, now):
    """Apply one detector run. Returns the findings opened, updated and resolved."""
    try:
        return _record(detector, problems, now)
    except IntegrityError:
        # Another runner opened the same finding between our read and our insert: read again.
        return _record(detector, problems, now)


def _record(detector, problems, now):
    wanted = {problem.fingerprint: problem for problem in problems}
    outcome = Outcome([], [], [])
    with transaction.atomic():
        open_findings = {
            finding.fingerprint: finding
            for finding in Finding.objects.select_for_update().filter(detector=detector, status=Finding.Status.OPEN)
        }
        for fingerprint, problem in wanted.items():
            finding = open_findings.get(fingerprint)
            if finding is None:
                outcome.opened.append(open_finding(detector, problem, now))
            elif update_finding(finding, problem, now):
                outcome.updated.append(finding)
        for fingerprint, finding in open_findings.items():
            if fingerprint not in wanted:
                finding.status = Finding.Status.RESOLVED
                finding.resolved_at = now
                finding.save(update_fields=["status", "resolved_at"])
                outcome.resolved.append(finding)
    return outcome


def open_finding(detector, problem, now):
    return Finding.objects.create(
        fingerprint=problem.fingerprint,
        detector=detector,
        kind=problem.kind,
        subject=problem.subject[:350],
        severity=problem.severity,
        title=problem.title[:300],
        explanation=problem.explanation,
        evidence=problem.evidence,
        count=problem.count,
        fix=problem.fix[:300],
        keys=sorted(set(problem.keys)),
        links=sorted(set(problem.links)),
        first_seen=now,
        last_seen=now,
    )


def update_finding(finding, problem, now):
    values = {
        "severity": problem.severity,
        "title": problem.title[:300],
        "explanation": problem.explanation,
        "evidence": problem.evidence,
        "count": problem.count,
        "fix": problem.fix[:300],
        "keys": sorted(set(problem.keys)),
        "links": sorted(set(problem.links)),
        "last_seen": max(finding.last_seen, now),
    }
    changed = [name for name in UPDATED_FIELDS if getattr(finding, name) != values[name]]
    for name in changed:
        setattr(finding, name, values[name])
    if changed:
        finding.save(update_fields=changed)
    return bool(changed)
