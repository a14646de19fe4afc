"""The alerts page: incidents (active first) with acknowledge and snooze, and the channels, with
any that failed or were turned off in plain sight."""

from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from monitors.actions import acknowledge_incident
from monitors.models import Incident, NotificationChannel
from monitors.web.access import staff_only
from monitors.web.respond import respond

SNOOZES = {"1h": 3600, "4h": 4 * 3600, "1d": 86400}


@staff_only
def alert_list(request):
    active = Incident.objects.filter(state__in=Incident.ACTIVE).select_related("finding").order_by("-opened_at")
    recent = Incident.objects.exclude(state__in=Incident.ACTIVE).order_by("-opened_at")[:50]
    channels = NotificationChannel.objects.order_by("name")
    context = {"active": active, "recent": recent, "channels": channels, "snoozes": SNOOZES,
               # A webhook's URL is its password: the API names channels without their targets.
               "channel_status": [{"name": c.name, "kind": c.kind, "enabled": c.enabled, "min_severity": c.min_severity,
                                   "consecutive_failures": c.consecutive_failures, "last_error": c.last_error,
                                   "last_success_at": c.last_success_at, "disabled_reason": c.disabled_reason}
                                  for c in channels]}
    return respond(request, "jobwatch/alerts.html", context, fragments=["alert-list"],
                   api=["active", "recent", "channel_status"])


@staff_only
@require_POST
def acknowledge(request, pk):
    snooze = SNOOZES.get(request.POST.get("snooze", ""))
    acknowledge_incident(request.user, pk, snooze_seconds=snooze, surface="dashboard")
    return redirect("monitors:alerts")
