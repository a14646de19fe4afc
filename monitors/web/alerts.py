"""The alerts page: the active incidents in triage order with acknowledge and snooze (one, or the
ticked ones at once), the recent ones, and the channels, with any that failed or were turned off
in plain sight."""

from django.http import Http404, HttpResponseRedirect
from django.shortcuts import redirect
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from monitors.actions import acknowledge_incidents
from monitors.models import Incident, NotificationChannel
from monitors.web.access import staff_only
from monitors.web.incidents import SNOOZES, incident_rows
from monitors.web.params import BadParameter, ids
from monitors.web.respond import respond
from monitors.web.triage import in_triage_order

RECENT_SHOWN = 50


@staff_only
def alert_list(request):
    active = incident_rows(in_triage_order(Incident.objects.filter(state__in=Incident.ACTIVE)))
    over = Incident.objects.exclude(state__in=Incident.ACTIVE)
    recent = list(over.order_by("-opened_at", "-pk")[:RECENT_SHOWN])
    channels = NotificationChannel.objects.order_by("name")
    context = {"active": active, "recent": recent, "recent_more": max(over.count() - len(recent), 0) if len(recent) == RECENT_SHOWN else 0,
               "channels": channels, "snoozes": SNOOZES,
               # A webhook's URL is its password: the API names channels without their targets.
               "channel_status": [{"name": c.name, "kind": c.kind, "enabled": c.enabled, "min_severity": c.min_severity,
                                   "consecutive_failures": c.consecutive_failures, "last_error": c.last_error,
                                   "last_success_at": c.last_success_at, "disabled_reason": c.disabled_reason}
                                  for c in channels]}
    return respond(request, "jobwatch/alerts.html", context, fragments=["alert-list"],
                   api=["active", "recent", "recent_more", "channel_status"])


@staff_only
@require_POST
def acknowledge(request, pk):
    """One incident (its row's buttons, or its page's)."""
    return acknowledged(request, [pk])


@staff_only
@require_POST
def acknowledge_selected(request):
    """The ticked incidents, each checked and audited on its own."""
    chosen = ids(request.POST, "incident")
    if not chosen:
        raise BadParameter("incident", "tick the incidents to acknowledge or snooze")
    return acknowledged(request, chosen)


def acknowledged(request, ids):
    chosen = request.POST.get("snooze", "")
    if chosen and chosen not in SNOOZES:
        raise BadParameter("snooze", f"{chosen[:40]!r} is not one of {', '.join(SNOOZES)}")
    try:
        # A refusal (ActionRefused) is answered 403 naming the permission (monitors/web/errors.py).
        acknowledge_incidents(request.user, ids, snooze_seconds=SNOOZES.get(chosen), surface="dashboard")
    except Incident.DoesNotExist as missing:
        raise Http404(str(missing)) from missing
    back = request.POST.get("next", "")
    if url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()}, require_https=request.is_secure()):
        # A URL, never a view name: redirect("²") would look "²" up as one and fail.
        return HttpResponseRedirect(back)
    return redirect("monitors:alerts")

