"""What Jobwatch said in one scenario of benchmarks/signal_scorecard.py, as figures and as text.

Read against the grouped-incident model (monitors/models.py, migration 0007): an incident's
findings are the ones whose `incident` points at it, its lead finding (`Incident.finding`), and
the findings of incidents merged into it. With today's code (one incident per finding, nothing
points back) that is the lead finding alone, so the same figures work before and after grouping.
"""

from collections import Counter
from types import SimpleNamespace

from monitors.models import Finding, Incident

TARGET_PAGE_SECONDS = 60
NOT_COUNTED = (Incident.State.MERGED, Incident.State.DISMISSED)


def right_incidents(scenario, stage):
    """Incidents that were opened (not merged, not dismissed) and whose lead finding names the
    scenario's cause and subject."""
    if scenario.right is None:
        return []
    incidents = Incident.objects.exclude(state__in=NOT_COUNTED).select_related("finding")
    return [incident for incident in incidents.order_by("pk") if scenario.right(incident.finding, stage)]


def group_of(incident, incidents):
    """The incident and every incident merged into it, however indirectly."""
    group = {incident.pk}
    grew = True
    while grew:
        merged = {other.pk for other in incidents if other.merged_into_id in group}
        grew = not merged <= group
        group |= merged
    return group


def findings_of(incident, incidents, findings):
    group = group_of(incident, incidents)
    leads = {other.finding_id for other in incidents if other.pk in group}
    return [finding for finding in findings if finding.pk in leads or finding.incident_id in group]


def the_right_incident(scenario, stage, incidents, findings, planted):
    """(incident, its findings, planted jobs found) for the right incident. When the fault was
    split into several incidents that each name it, the one whose evidence holds the most planted
    jobs: the others' findings then count as false, and the split fails "exactly one"."""
    best = (None, [], 0)
    for incident in right_incidents(scenario, stage):
        members = findings_of(incident, incidents, findings)
        found = scenario.found(members, planted, stage) if planted else 0
        if best[0] is None or found > best[2]:
            best = (incident, members, found)
    return best


def seconds_after(moment, fault_started):
    return round(moment - fault_started, 1) if moment is not None else None


def score(scenario, stage, notifications, fault_started):
    findings = list(Finding.objects.order_by("pk"))
    incidents = list(Incident.objects.select_related("finding").order_by("pk"))
    counted = [incident for incident in incidents if incident.state not in NOT_COUNTED]
    planted = scenario.planted(stage) if scenario.planted else []
    right, members, found = the_right_incident(scenario, stage, incidents, findings, planted)
    member_pks = {finding.pk for finding in members}
    pages = sorted(((arrival, payload) for arrival, payload in notifications if right and payload.get("incident") == right.pk),
                   key=lambda notice: notice[0])
    figures = {
        "fault": scenario.fault,
        "expected": scenario.expected or "nothing",
        "paged": scenario.paged,
        "findings": len(findings),
        "findings_by_kind": dict(Counter(finding.kind for finding in findings)),
        "findings_by_severity": dict(Counter(finding.severity for finding in findings)),
        "incidents": len(counted),
        "incidents_dismissed": sum(1 for incident in incidents if incident.state == Incident.State.DISMISSED),
        "incidents_merged": sum(1 for incident in incidents if incident.state == Incident.State.MERGED),
        "notifications": len(notifications),
        "notifications_by_event": dict(Counter(payload.get("event") for _, payload in notifications)),
        "right_incidents": len(right_incidents(scenario, stage)),
        "right_incident": right.title if right else None,
        "right_incident_findings": len(members),
        "planted": len(planted),
        "recall_found": found,
        "recall": round(found / len(planted), 3) if planted else None,
        "recall_method": scenario.recall_method or None,
        "false_findings": len([finding for finding in findings if finding.pk not in member_pks]),
        "first_notification_s": seconds_after(min((arrival for arrival, _ in notifications), default=None), fault_started),
        "right_notification_s": seconds_after(pages[0][0] if pages else None, fault_started),
        # When the right incident had held and opened (notified, if its severity reaches a channel).
        "right_open_s": seconds_after(right.notified_at.timestamp() if right and right.notified_at else None, fault_started),
        # The incident's lead can change after it was sent: did the page itself name the cause?
        "right_page_named_cause": page_names_cause(scenario, stage, pages[0][1]) if pages else None,
        # What a reader needs to see what Jobwatch said (printed, not put in the JSON line).
        "said": said(findings, incidents, notifications, fault_started, member_pks, {right.pk} if right else set()),
    }
    figures["met"] = met(scenario, figures)
    return figures


def page_names_cause(scenario, stage, payload):
    """The notification's incident, as it was sent, led by the right kind of finding and subject."""
    as_sent = SimpleNamespace(kind=payload.get("kind"), subject=payload.get("subject"), evidence=payload.get("evidence") or {})
    return bool(scenario.right(as_sent, stage))


def met(scenario, figures):
    """The targets (benchmarks/signal_scorecard.py TARGETS): nothing at all when healthy; for a fault, one
    incident, the right one, holding every planted job, paged once within a minute; for a smell
    (info: shown, never paged, DESIGN.md), the same incident, held and shown, and no page (when it
    showed is a figure, not a target: nobody is waiting for it)."""
    if scenario.right is None:
        return figures["findings"] == 0 and figures["incidents"] + figures["incidents_dismissed"] == 0 and figures["notifications"] == 0
    one_right_incident = figures["incidents"] == 1 and figures["right_incidents"] == 1 and figures["recall"] == 1.0
    if not scenario.paged:
        return one_right_incident and figures["notifications"] == 0 and figures["right_open_s"] is not None
    paged = figures["right_notification_s"]
    return one_right_incident and figures["notifications"] <= 1 and paged is not None and paged <= TARGET_PAGE_SECONDS


def said(findings, incidents, notifications, fault_started, member_pks, right_pks):
    lead_of = {incident.finding_id: incident.pk for incident in incidents}
    return {
        "findings": [
            {"id": finding.pk, "severity": finding.severity, "kind": finding.kind, "subject": finding.subject,
             "status": finding.status, "title": finding.title, "incident": finding.incident_id or lead_of.get(finding.pk),
             "in_right_incident": finding.pk in member_pks}
            for finding in findings
        ],
        "incidents": [
            {"id": incident.pk, "state": incident.state, "severity": incident.severity, "title": incident.title,
             "lead": f"#{incident.finding_id} {incident.finding.kind} {incident.finding.subject}",
             "findings": sum(1 for finding in findings if finding.incident_id == incident.pk) or 1,
             "right": incident.pk in right_pks, "merged_into": incident.merged_into_id}
            for incident in incidents
        ],
        "notifications": [
            {"after_s": round(arrival - fault_started, 1), "event": payload.get("event"), "severity": payload.get("severity"),
             "title": payload.get("title"), "incident": payload.get("incident"),
             "lead": f"{payload.get('kind')} {payload.get('subject')}", "findings": len(payload.get("findings") or []) or 1}
            for arrival, payload in notifications
        ],
    }


def report(scenario, figures):
    """The scenario in words: what was planted, and everything Jobwatch said about it."""
    said_ = figures["said"]
    lines = [f"== {scenario.name}: {figures['fault']}", f"   right incident: {figures['expected']}"]
    lines.append(f"   findings ({len(said_['findings'])}):")
    for finding in said_["findings"]:
        where = f"incident #{finding['incident']}" if finding["incident"] else "no incident"
        mark = " RIGHT" if finding["in_right_incident"] else ""
        lines.append(f"     #{finding['id']} [{finding['severity']}] {finding['kind']} ({finding['status']}, {where}{mark}): "
                     f"{finding['title']}")
    lines.append(f"   incidents ({len(said_['incidents'])}):")
    for incident in said_["incidents"]:
        mark = " RIGHT" if incident["right"] else ""
        merged = f" into #{incident['merged_into']}" if incident["merged_into"] else ""
        lines.append(f"     #{incident['id']} [{incident['state']}{merged}, {incident['severity']}]{mark} {incident['title']}"
                     f"  (lead {incident['lead']}; {incident['findings']} finding(s))")
    lines.append(f"   notifications ({len(said_['notifications'])}):")
    for notice in said_["notifications"]:
        lines.append(f"     {notice['after_s']:+.1f} s {notice['event']} [{notice['severity']}] {notice['title']} "
                     f"(incident #{notice['incident']}, as sent: lead {notice['lead']}, {notice['findings']} finding(s))")
    if figures["right_incidents"] > 1:
        lines.append(f"   {figures['right_incidents']} incidents name the right cause: the fault was split (figures for the one "
                     "whose evidence holds the most planted jobs; the others' findings count as false)")
    if figures["right_open_s"] is not None:
        lines.append(f"   the right incident held and opened {figures['right_open_s']:+.1f} s after the fault began")
    if figures["right_page_named_cause"] is False:
        lines.append("   the right incident's first notification named another lead than the right cause")
    if figures["planted"]:
        lines.append(f"   recall {figures['recall_found']}/{figures['planted']}: {figures['recall_method']}")
    lines.append(f"   met: {figures['met']}")
    return "\n".join(lines)
