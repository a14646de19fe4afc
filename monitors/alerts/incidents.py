"""From findings to incidents to notifications (Alertmanager's grouping and repeat, without its
YAML): every open finding is an incident; it is notified when it has held ALERT_HOLD_SECONDS,
again every ALERT_REPEAT_SECONDS while open unless acknowledged or snoozed, and once when it has
been over for ALERT_RESOLVE_HOLD_SECONDS.

Safe with several alert tasks at once: each step is a conditional UPDATE ("pending → open"), and
only the task whose UPDATE changed the row creates the notifications, which are unique per
(incident, channel, event, repeat) besides.
"""

from datetime import timedelta

from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from monitors.conf import setting
from monitors.models import Finding, Incident, Notification, NotificationChannel, Severity

SEVERITY_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}


def update_incidents(now=None):
    """One pass of the lifecycle. Returns the notifications it created."""
    now = now or timezone.now()
    created = follow_open_findings(now)
    created += notify_held(now)
    created += notice_resolved(now)
    created += notify_repeats(now)
    created += notify_resolves(now)
    return created


def follow_open_findings(now):
    """An incident for every open finding. A finding whose problem comes back while its old
    incident is still settling (resolving) continues that incident: a flap is not a new page. An
    open incident whose finding grew more severe (warning → critical) is notified again."""
    created = []
    active = {incident.fingerprint: incident for incident in Incident.objects.filter(state__in=Incident.ACTIVE)}
    for finding in Finding.objects.filter(status=Finding.Status.OPEN):
        incident = active.get(finding.fingerprint)
        if incident is None:
            try:
                with transaction.atomic():
                    Incident.objects.create(
                        fingerprint=finding.fingerprint, finding=finding, kind=finding.kind, subject=finding.subject,
                        severity=finding.severity, title=finding.title, opened_at=finding.first_seen,
                    )
            except IntegrityError:
                pass  # another alert task created it
            continue
        changes = {"title": finding.title}
        if incident.finding_id != finding.pk or incident.state == Incident.State.RESOLVING:
            changes.update(finding=finding, resolved_at=None,
                           state=Incident.State.OPEN if incident.notified_at else Incident.State.PENDING)
        Incident.objects.filter(pk=incident.pk).update(**changes)
        if SEVERITY_RANK[finding.severity] != SEVERITY_RANK[incident.severity]:
            # Conditional, so that one alert task notifies an escalation, however many run.
            moved = Incident.objects.filter(pk=incident.pk, severity=incident.severity).update(severity=finding.severity)
            escalated = SEVERITY_RANK[finding.severity] > SEVERITY_RANK[incident.severity]
            if moved and escalated and incident.notified_at and incident.state == Incident.State.OPEN:
                created += notify(incident, Notification.Event.ESCALATED, SEVERITY_RANK[finding.severity], now)
    return created


def notify_held(now):
    hold = timedelta(seconds=setting("ALERT_HOLD_SECONDS"))
    created = []
    for incident in Incident.objects.filter(state=Incident.State.PENDING).select_related("finding"):
        if incident.finding.status != Finding.Status.OPEN:
            Incident.objects.filter(pk=incident.pk, state=Incident.State.PENDING).update(
                state=Incident.State.DISMISSED, resolved_at=incident.finding.resolved_at or now)
            continue
        if now - incident.opened_at < hold:
            continue
        claimed = Incident.objects.filter(pk=incident.pk, state=Incident.State.PENDING).update(
            state=Incident.State.OPEN, notified_at=now, last_notified_at=now)
        if claimed:
            created += notify(incident, Notification.Event.OPENED, 0, now)
    return created


def notice_resolved(now):
    """Open incidents whose finding is over start holding their resolve."""
    resolved = Incident.objects.filter(state=Incident.State.OPEN, finding__status=Finding.Status.RESOLVED)
    for incident in resolved.select_related("finding"):
        Incident.objects.filter(pk=incident.pk, state=Incident.State.OPEN).update(
            state=Incident.State.RESOLVING, resolved_at=incident.finding.resolved_at or now)
    return []


def notify_repeats(now):
    repeat = timedelta(seconds=setting("ALERT_REPEAT_SECONDS"))
    due = Incident.objects.filter(state=Incident.State.OPEN, acknowledged_at__isnull=True, last_notified_at__lte=now - repeat)
    due = due.filter(Q(snoozed_until__isnull=True) | Q(snoozed_until__lte=now))
    created = []
    for incident in due:
        claimed = Incident.objects.filter(pk=incident.pk, last_notified_at=incident.last_notified_at).update(
            last_notified_at=now, repeats=F("repeats") + 1)
        if claimed:
            created += notify(incident, Notification.Event.REPEAT, incident.repeats + 1, now)
    return created


def notify_resolves(now):
    hold = timedelta(seconds=setting("ALERT_RESOLVE_HOLD_SECONDS"))
    created = []
    for incident in Incident.objects.filter(state=Incident.State.RESOLVING, resolved_at__lte=now - hold):
        claimed = Incident.objects.filter(pk=incident.pk, state=Incident.State.RESOLVING).update(state=Incident.State.RESOLVED)
        if claimed:
            created += notify(incident, Notification.Event.RESOLVED, 0, now)
    return created


def notify(incident, event, sequence, now):
    """A notification of `event` for every enabled channel the incident's severity reaches."""
    incident.refresh_from_db()
    payload = payload_of(incident, event)
    created = []
    for channel in NotificationChannel.objects.filter(enabled=True):
        if SEVERITY_RANK[incident.severity] < SEVERITY_RANK[channel.min_severity]:
            continue
        try:
            with transaction.atomic():
                created.append(Notification.objects.create(
                    incident=incident, channel=channel, event=event, sequence=sequence, created_at=now, payload=payload))
        except IntegrityError:
            pass  # already created by another alert task
    return created


def payload_of(incident, event):
    """What every channel says: the incident, the finding with its evidence, and where to look."""
    finding = incident.finding
    base = setting("DASHBOARD_URL").rstrip("/")
    return {
        "event": event,
        "incident": incident.pk,
        "state": incident.state,
        "severity": incident.severity,
        "title": incident.title,
        "kind": incident.kind,
        "subject": incident.subject,
        "opened_at": incident.opened_at.isoformat(),
        "resolved_at": incident.resolved_at.isoformat() if incident.resolved_at else None,
        "explanation": finding.explanation,
        "evidence": finding.evidence,
        "count": finding.count,
        "url": f"{base}/admin/monitors/finding/{finding.pk}/change/" if base else "",
    }


def acknowledge(incident, username, now=None):
    """Silence the repeats of an open incident (its resolve is still notified)."""
    Incident.objects.filter(pk=incident.pk).update(acknowledged_at=now or timezone.now(), acknowledged_by=username)


def snooze(incident, seconds, now=None):
    Incident.objects.filter(pk=incident.pk).update(snoozed_until=(now or timezone.now()) + timedelta(seconds=seconds))
