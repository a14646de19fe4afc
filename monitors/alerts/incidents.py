"""From findings to incidents to notifications (Alertmanager's grouping and repeat, without its
YAML).

Findings are evidence; an incident is one problem (monitors/alerts/correlation.py says which
findings belong together). An incident is notified when it has held ALERT_HOLD_SECONDS — which
also gives the evidence of one fault, seen by several detectors, time to gather —, again when it
grows more severe, every ALERT_REPEAT_SECONDS while open unless acknowledged or snoozed, and once
when all its evidence has been over for ALERT_RESOLVE_HOLD_SECONDS. Channels hear of an incident
only from its severity up to their minimum severity; a channel first reached by an escalation is
told it opened.

Safe with several alert tasks at once: one pass holds a lock while it groups findings and moves
incidents on (an advisory lock on PostgreSQL; SQLite's IMMEDIATE transactions take the write lock
at BEGIN), and notifications are unique per (incident, channel, event, repeat) besides.
"""

import zlib
from datetime import timedelta

from django.db import IntegrityError, connection, transaction
from django.db.models import F, Q
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from monitors.alerts import correlation
from monitors.alerts.correlation import SEVERITY_RANK
from monitors.conf import setting
from monitors.models import Finding, Incident, Notification, NotificationChannel, Severity

LOCK_KEY = zlib.crc32(b"jobwatch.incidents")
# Findings listed in a notification (the incident's page lists them all).
FINDINGS_SHOWN = 20


def update_incidents(now=None):
    """One pass of the lifecycle. Returns the notifications it created."""
    now = now or timezone.now()
    with transaction.atomic():
        take_lock()
        group_new_findings(now)
        created = follow_evidence(now)
        created += notify_held(now)
        created += notify_repeats(now)
        created += notify_resolves(now)
    return created


def take_lock():
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [LOCK_KEY])


# -- grouping ------------------------------------------------------------------------------------


def group_new_findings(now):
    """Every open finding that has no incident joins the active incident it is evidence of, or
    opens one. Causes go first, so that a symptom seen in the same pass joins its cause."""
    active = {incident.pk: incident for incident in Incident.objects.filter(state__in=Incident.ACTIVE)}
    evidence = {pk: [] for pk in active}
    for finding in Finding.objects.filter(incident__in=list(active)):
        evidence[finding.incident_id].append(finding)
    new = sorted(Finding.objects.filter(status=Finding.Status.OPEN, incident__isnull=True),
                 key=lambda f: (correlation.cause_rank(f), f.first_seen, f.pk))
    for finding in new:
        # A problem that is over (resolving) is continued by its problem coming back, not by a smell.
        matching = [pk for pk, found in evidence.items() if found and correlation.belongs_with(finding, found)
                    and not (finding.severity == Severity.INFO and active[pk].state == Incident.State.RESOLVING)]
        if not matching:
            incident = open_incident(finding)
            active[incident.pk], evidence[incident.pk] = incident, [finding]
            continue
        # The incident people may already have heard of keeps the problem; others it bridges to
        # are folded into it, when their causes are the same problem.
        matching.sort(key=lambda pk: (active[pk].notified_at is None, active[pk].opened_at, pk))
        keeper = matching[0]
        attach(finding, active[keeper])
        evidence[keeper].append(finding)
        for pk in matching[1:]:
            if correlation.compatible(correlation.lead_of(evidence[keeper]), correlation.lead_of(evidence[pk])):
                merge(active[pk], active[keeper], now)
                evidence[keeper] += evidence.pop(pk)


def open_incident(finding):
    incident = Incident.objects.create(
        fingerprint=finding.fingerprint, finding=finding, kind=finding.kind, subject=finding.subject,
        severity=finding.severity, title=finding.title, fix=finding.fix, impact=finding.count or 0,
        keys=correlation.keys_of([finding]), opened_at=finding.first_seen, last_seen=finding.last_seen,
    )
    attach(finding, incident)
    return incident


def attach(finding, incident):
    Finding.objects.filter(pk=finding.pk).update(incident=incident)
    finding.incident_id = incident.pk


def merge(absorbed, keeper, now):
    """Fold an incident into another: its findings move, it ends as merged (nothing is sent for
    it: what follows is sent for the keeper, which opened first)."""
    Finding.objects.filter(incident=absorbed).update(incident=keeper)
    Incident.objects.filter(pk=absorbed.pk).update(state=Incident.State.MERGED, merged_into=keeper, resolved_at=now)
    if absorbed.opened_at < keeper.opened_at:
        Incident.objects.filter(pk=keeper.pk).update(opened_at=absorbed.opened_at)


# -- following the evidence ----------------------------------------------------------------------


def follow_evidence(now):
    """Each active incident takes its lead, title, severity and impact from its open findings;
    one whose evidence is all over starts holding its resolve (or is dismissed, if nobody heard of
    it yet); one whose evidence came back opens again. Growing more severe is notified."""
    created = []
    for incident in Incident.objects.filter(state__in=Incident.ACTIVE):
        findings = list(incident.findings.all())
        open_findings = [f for f in findings if f.status == Finding.Status.OPEN]
        if SEVERITY_RANK[incident.severity] > 0 and open_findings and all(f.severity == Severity.INFO for f in open_findings):
            # The problem is over; the code smells that came with it (duplicates of the jobs that
            # piled up, say) go on as an incident of their own, which is shown, not paged.
            Finding.objects.filter(pk__in=[f.pk for f in open_findings]).update(incident=None)
            findings, open_findings = [f for f in findings if f.status != Finding.Status.OPEN], []
        if not open_findings:
            over_at = max((f.resolved_at for f in findings if f.resolved_at), default=now)
            if incident.state == Incident.State.PENDING:
                Incident.objects.filter(pk=incident.pk).update(state=Incident.State.DISMISSED, resolved_at=over_at)
            elif incident.state == Incident.State.OPEN:
                Incident.objects.filter(pk=incident.pk).update(state=Incident.State.RESOLVING, resolved_at=over_at)
            continue
        lead = correlation.lead_of(open_findings)
        named_after = next((f for f in findings if f.pk == incident.finding_id), None)
        if named_after is not None and correlation.cause_rank(named_after) < correlation.cause_rank(lead):
            # The cause ended first and its symptoms linger (failures still high, a queue draining):
            # the incident keeps the cause's name, to its resolved notice — an incident that
            # turned into "failure rate high" would page as a problem nobody was told of.
            lead = named_after
        severity = correlation.severity_of(open_findings)
        changes = {"finding": lead, "kind": lead.kind, "subject": lead.subject[:350], "title": lead.title[:300],
                   "fix": lead.fix, "impact": correlation.impact_of(open_findings), "severity": severity,
                   "keys": correlation.keys_of(findings), "last_seen": max(f.last_seen for f in open_findings)}
        if incident.state == Incident.State.RESOLVING:
            changes.update(state=Incident.State.OPEN, resolved_at=None)
        Incident.objects.filter(pk=incident.pk).update(**changes)
        escalated = SEVERITY_RANK[severity] > SEVERITY_RANK[incident.severity]
        if escalated and incident.notified_at:
            created += notify(incident, Notification.Event.ESCALATED, SEVERITY_RANK[severity], now)
    return created


def notify_held(now):
    """Pending incidents that have held are notified. One led by a symptom (a failure rate, a
    queue's age) holds until the detectors have run once more: the cause often shows a pass later
    (rolled-back orphans after their commit grace), and the page should name it."""
    hold = timedelta(seconds=setting("ALERT_HOLD_SECONDS"))
    symptom_hold = max(hold, timedelta(seconds=setting("DETECT_INTERVAL") + 5))
    created = []
    for incident in Incident.objects.filter(state=Incident.State.PENDING, opened_at__lte=now - hold):
        if not correlation.is_cause(incident) and incident.opened_at > now - symptom_hold:
            continue
        claimed = Incident.objects.filter(pk=incident.pk, state=Incident.State.PENDING).update(
            state=Incident.State.OPEN, notified_at=now, last_notified_at=now)
        if claimed:
            created += notify(incident, Notification.Event.OPENED, 0, now)
    return created


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


# -- notifications -------------------------------------------------------------------------------


def notify(incident, event, sequence, now):
    """A notification of `event` for the channels it concerns. Opened and escalated: every enabled
    channel the incident's severity reaches (a channel it reaches for the first time is told it
    opened). Repeats and the resolve: the channels that were told it opened."""
    incident.refresh_from_db()
    told = set(Notification.objects.filter(incident=incident, event__in=[Notification.Event.OPENED])
               .values_list("channel_id", flat=True))
    payloads = {}
    created = []
    for channel in NotificationChannel.objects.filter(enabled=True):
        if event in (Notification.Event.OPENED, Notification.Event.ESCALATED):
            if SEVERITY_RANK[incident.severity] < SEVERITY_RANK[channel.min_severity]:
                continue
            sent_as, number = (event, sequence) if channel.pk in told else (Notification.Event.OPENED, 0)
        elif channel.pk in told:
            sent_as, number = event, sequence
        else:
            continue
        if sent_as not in payloads:
            payloads[sent_as] = payload_of(incident, sent_as)
        try:
            with transaction.atomic():
                created.append(Notification.objects.create(
                    incident=incident, channel=channel, event=sent_as, sequence=number, created_at=now, payload=payloads[sent_as]))
        except IntegrityError:
            pass  # already created by another alert task
    return created


def payload_of(incident, event):
    """What every channel says: the problem, its usual fix, its evidence, and where to look."""
    lead = incident.finding
    findings = list(incident.findings.order_by("-status", "pk")[:FINDINGS_SHOWN])
    return {
        "event": event,
        "incident": incident.pk,
        "state": incident.state,
        "severity": incident.severity,
        "title": incident.title,
        "kind": incident.kind,
        "subject": incident.subject,
        "fix": incident.fix,
        "impact": incident.impact,
        "opened_at": incident.opened_at.isoformat(),
        "resolved_at": incident.resolved_at.isoformat() if incident.resolved_at else None,
        "explanation": lead.explanation,
        "evidence": lead.evidence,
        "count": lead.count,
        "findings": [{"id": f.pk, "kind": f.kind, "subject": f.subject, "severity": f.severity, "status": f.status,
                      "title": f.title, "count": f.count} for f in findings],
        "url": incident_url(incident),
    }


def incident_url(incident):
    base = setting("DASHBOARD_URL").rstrip("/")
    if not base:
        return ""
    try:
        return base + reverse("monitors:incident", args=[incident.pk])
    except NoReverseMatch:
        return f"{base}/admin/monitors/incident/{incident.pk}/change/"


def acknowledge(incident, username, now=None):
    """Silence the repeats of an open incident (its resolve is still notified)."""
    Incident.objects.filter(pk=incident.pk).update(acknowledged_at=now or timezone.now(), acknowledged_by=username)


def snooze(incident, seconds, now=None):
    Incident.objects.filter(pk=incident.pk).update(snoozed_until=(now or timezone.now()) + timedelta(seconds=seconds))
