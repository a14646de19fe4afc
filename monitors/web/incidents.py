"""Incidents: one problem each, with its findings as evidence. An incident's page says what is
wrong, since when, how many jobs it holds up and the usual fix, lists every finding (the lead, its
likeliest cause, first), where its jobs are, and what was sent about it; the list pages through
every incident, newest first. `incident_rows` gives the Overview and Alerts their rows."""

from django.db.models import Count, Prefetch, Q
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.utils.http import urlencode
from django.utils.text import slugify

from monitors.models import Circuit, Finding, Incident
from monitors.web.access import staff_only
from monitors.web.params import Choice, Id, query
from monitors.web.respond import respond
from monitors.web.triage import in_triage_order

PAGE = 100
# Acknowledge's other choice: silence the repeats for a while.
SNOOZES = {"1h": 3600, "4h": 4 * 3600, "1d": 86400}
FINDINGS_SHOWN = 100
NOTIFICATIONS_SHOWN = 50
STATES = {"active": Q(state__in=Incident.ACTIVE), "over": ~Q(state__in=Incident.ACTIVE),
          **{value: Q(state=value) for value in Incident.State.values}}


@staff_only
@query(state=Choice(STATES, default=""), before=Id())
def incident_list(request):
    state = request.query["state"]
    incidents = Incident.objects.filter(STATES.get(state, Q())).order_by("-pk")  # newest first, keyset by pk
    if request.query["before"]:
        incidents = incidents.filter(pk__lt=request.query["before"])
    page = list(incidents.annotate(evidence=Count("findings"))[: PAGE + 1])
    older = page[PAGE - 1].pk if len(page) > PAGE else None
    context = {"incidents": [row(incident) for incident in page[:PAGE]], "older": older, "state": state,
               "states": [("active", "active"), ("over", "over"), *Incident.State.choices]}
    return respond(request, "jobwatch/incidents.html", context, fragments=["incident-rows"],
                   api=["incidents", "older", "state"])


@staff_only
def incident_detail(request, pk):
    incident = get_object_or_404(Incident.objects.select_related("finding", "merged_into"), pk=pk)
    evidence = in_triage_order(incident.findings.all(), first=Q(pk=incident.finding_id))
    findings = list(evidence[:FINDINGS_SHOWN])
    findings_total = evidence.count() if len(findings) == FINDINGS_SHOWN else len(findings)
    notifications = incident.notifications.select_related("channel").order_by("-created_at")
    shown = [sent(notification) for notification in notifications[:NOTIFICATIONS_SHOWN]]
    notifications_total = notifications.count() if len(shown) == NOTIFICATIONS_SHOWN else len(shown)
    context = {
        "incident": incident, "lead": incident.finding, "active": incident.state in Incident.ACTIVE, "snoozes": SNOOZES,
        "findings": findings, "findings_total": findings_total, "findings_more": findings_total - len(findings),
        "job_links": job_links([key for finding in findings for key in finding.keys or ()]),
        "notifications": shown, "notifications_total": notifications_total, "notifications_more": notifications_total - len(shown),
    }
    return respond(request, "jobwatch/incident.html", context, fragments=["incident-state"],
                   api=["incident", "lead", "findings", "findings_total", "job_links", "notifications", "notifications_total"])


def incident_rows(incidents):
    """The rows of the incident lists (Overview, Alerts) and of their JSON: the incident, how many
    findings are its evidence, and where its jobs are (from what its findings are about)."""
    incidents = list(incidents.annotate(evidence=Count("findings")).prefetch_related(
        Prefetch("findings", queryset=Finding.objects.only("pk", "incident_id", "keys"), to_attr="about")))
    services = {key.removeprefix("service:") for incident in incidents for finding in incident.about
                for key in finding.keys or () if key.startswith("service:")}
    circuits = set(Circuit.objects.filter(name__in=services).values_list("name", flat=True)) if services else set()
    return [{**row(incident), "job_links": job_links([key for finding in incident.about for key in finding.keys or ()], circuits)}
            for incident in incidents]


def row(incident):
    return {
        "id": incident.pk, "title": incident.title, "severity": incident.severity, "state": incident.state,
        "state_label": incident.get_state_display(), "kind": incident.kind, "subject": incident.subject,
        "fix": incident.fix, "impact": incident.impact, "findings": getattr(incident, "evidence", None),
        "finding_id": incident.finding_id, "opened_at": incident.opened_at, "last_seen": incident.last_seen,
        "notified_at": incident.notified_at, "last_notified_at": incident.last_notified_at,
        "resolved_at": incident.resolved_at, "acknowledged_at": incident.acknowledged_at,
        "acknowledged_by": incident.acknowledged_by, "snoozed_until": incident.snoozed_until,
        "merged_into_id": incident.merged_into_id,
    }


def job_links(keys, circuits=None):
    """Where an incident's jobs are, as the jobs list's filters (monitors/actions/selection.py) from what
    its findings are about: a task, a queue, a receiver that enqueued them, a service's circuit
    (its tile, and the jobs calling through it). A service without a circuit and a model's saves
    have no filter of their own: their findings' pages list their jobs."""
    keys = list(dict.fromkeys(keys))
    if circuits is None:
        services = [key.removeprefix("service:") for key in keys if key.startswith("service:")]
        circuits = set(Circuit.objects.filter(name__in=services).values_list("name", flat=True)) if services else set()
    jobs = reverse("monitors:jobs")
    links = []
    for key in keys:
        kind, _, name = key.partition(":")
        if kind == "task" and name:
            links.append({"label": f"jobs of {name}", "url": f"{jobs}?{urlencode({'task': name})}"})
        elif kind == "queue" and name:
            links.append({"label": f"jobs in queue {name}", "url": f"{jobs}?{urlencode({'queue': name})}"})
        elif kind == "receiver" and name:
            links.append({"label": f"jobs enqueued by {name}", "url": f"{jobs}?{urlencode({'receiver': name})}"})
        elif kind == "service" and name in circuits:
            links.append({"label": f"circuit {name}", "url": f"{reverse('monitors:circuits')}#circuit-{slugify(name)}"})
            links.append({"label": f"jobs through {name}", "url": f"{jobs}?{urlencode({'circuit': name})}"})
    return links


def sent(notification):
    """A notification as the page shows it: never the channel's target (a webhook's URL is its
    password) nor the payload."""
    return {"channel": notification.channel.name, "kind": notification.channel.kind, "event": notification.event,
            "event_label": notification.get_event_display(), "created_at": notification.created_at,
            "sent_at": notification.sent_at, "status": notification.status, "status_label": notification.get_status_display(),
            "attempts": notification.attempts, "last_error": notification.last_error}
