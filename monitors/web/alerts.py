"""The alerts page: incidents (active first) with acknowledge and snooze, and the channels, with
any that failed or were turned off in plain sight."""

from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from monitors.actions import acknowledge_incident
from monitors.models import Incident, NotificationChannel
from monitors.web.access import staff_only

SNOOZES = {"1h": 3600, "4h": 4 * 3600, "1d": 86400}


@staff_only
def alert_list(request):
    active = Incident.objects.filter(state__in=Incident.ACTIVE).select_related("finding").order_by("-opened_at")
    recent = Incident.objects.exclude(state__in=Incident.ACTIVE).order_by("-opened_at")[:50]
    channels = NotificationChannel.objects.order_by("name")
    return render(request, "jobwatch/alerts.html", {"active": active, "recent": recent, "channels": channels,
                                                     "snoozes": SNOOZES})


@staff_only
@require_POST
def acknowledge(request, pk):
    snooze = SNOOZES.get(request.POST.get("snooze", ""))
    acknowledge_incident(request.user, pk, snooze_seconds=snooze, surface="dashboard")
    return redirect("monitors:alerts")
