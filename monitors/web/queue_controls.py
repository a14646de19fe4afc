"""Pausing and resuming a queue from its page or the Queues page: a POST, confirmed first like
every change (what the queue holds and who would stop), then monitors/actions/queues.py, which
checks the permission (monitors.pause_queues) and writes the audit log."""

from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from monitors.actions import pause_queue, resume_queue
from monitors.models import QueuePause
from monitors.sampling import latest_queue_rows
from monitors.web.access import staff_only
from monitors.web.actions import confirmation
from monitors.web.params import BadParameter

REASON_LENGTH = 300


def waiting_in(name):
    return next((row.depth for row in latest_queue_rows() if row.name == name), None)


@staff_only
@require_POST
def queue_pause(request, name):
    reason = request.POST.get("reason", "").strip()
    if len(reason) > REASON_LENGTH or "\x00" in reason:
        raise BadParameter("reason", f"a reason of at most {REASON_LENGTH} characters")
    try:
        if request.POST.get("confirmed") != "yes":
            preview = pause_queue(request.user, name, reason=reason, surface="dashboard", dry_run=True)
            return confirmation(request, "pause", f"Pause {name} on every worker?", preview,
                                {"queue": name, "waiting": waiting_in(name), "confirm_label": f"Yes, pause {name}"})
        pause_queue(request.user, name, reason=reason, surface="dashboard")
    except ValueError as error:
        raise BadParameter("name", str(error)) from error
    return redirect("monitors:queue", name)


@staff_only
@require_POST
def queue_resume(request, name):
    try:
        if request.POST.get("confirmed") != "yes":
            preview = resume_queue(request.user, name, surface="dashboard", dry_run=True)
            return confirmation(request, "resume", f"Resume {name}?", preview,
                                {"queue": name, "waiting": waiting_in(name), "pause": QueuePause.objects.filter(queue=name).first(),
                                 "confirm_label": f"Yes, resume {name}"})
        resume_queue(request.user, name, surface="dashboard")
    except ValueError as error:
        raise BadParameter("name", str(error)) from error
    return redirect("monitors:queue", name)
