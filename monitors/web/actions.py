"""The dashboard's side of replay, purge and restore, and the audit log.

Every change is a POST (CSRF-checked by Django's middleware) in two steps: the first shows the
action's own dry run (how many, a sample, what would be refused and why) with a confirmation
form; the second, confirmed, runs it and goes to the action's page, which shows its progress
while it runs in the background. Permissions are checked by monitors/actions.py, which answers
a refusal with 403 and writes it to the audit log. GET never changes anything.
"""

import uuid

from django.utils.translation import ngettext

from django.http import HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from monitors.actions import TooLarge, discard_jobs, force_circuit, purge_messages, replay_jobs, restore_messages
from monitors.brokers import BrokerUnavailable, PeekUnavailable
from monitors.circuits.stores import StoreUnavailable
from monitors.models import ActionLog, ArchivedMessage
from monitors.purge import MessageSelection
from monitors.selection import FILTER_KEYS, BadSelection, JobSelection
from monitors.web.access import staff_only
from monitors.web.respond import respond

ARCHIVE_PAGE = 100
# The POST fields that carry the selection through the confirmation page unchanged.
CARRIED = ("id", "finding", "force", "pick", "task", "everything", "archived", "undo", "change", "reason", *FILTER_KEYS)
AUDIT_PAGE = 100


def carried_fields(post):
    return [(name, value) for name in CARRIED for value in post.getlist(name) if value]


def confirmation(request, action, title, preview, extra=None, error=""):
    context = {
        "action": action, "title": title, "preview": preview, "fields": carried_fields(request.POST),
        "request_key": request.POST.get("request_key") or uuid.uuid4().hex, "error": error, **(extra or {}),
    }
    return render(request, "jobwatch/confirm.html", context, status=400 if error else 200)


def replay_title(count):
    return f"Replay {count} {ngettext('job', 'jobs', count)}?"


def job_selection(post):
    if post.getlist("id"):
        return JobSelection.from_ids(post.getlist("id"))
    if post.get("finding"):
        return JobSelection.from_finding(post["finding"])
    return JobSelection.from_filter({key: post.get(key, "") for key in FILTER_KEYS})


@staff_only
@require_POST
def replay(request):
    try:
        selection = job_selection(request.POST)
    except BadSelection as error:
        return HttpResponseBadRequest(f"Cannot replay: {error}", content_type="text/plain")
    force = request.POST.get("force") == "1"
    if request.POST.get("confirmed") != "yes":
        preview = replay_jobs(request.user, selection, force=force, dry_run=True, surface="dashboard")
        return confirmation(request, "replay", replay_title(preview.matched), preview)
    try:
        result = replay_jobs(request.user, selection, force=force, surface="dashboard", request_key=request.POST.get("request_key"),
                             allow_large=request.POST.get("allow_large") == "1")
    except TooLarge as error:
        preview = replay_jobs(request.user, selection, force=force, dry_run=True, surface="dashboard")
        return confirmation(request, "replay", replay_title(preview.matched), preview, {"too_large": True}, str(error))
    return redirect("monitors:action", result.log.pk)


@staff_only
@require_POST
def discard(request):
    """Hide failed jobs from the history (the failures page's "discard this group"); undo=1 brings
    them back."""
    try:
        selection = job_selection(request.POST)
    except BadSelection as error:
        return HttpResponseBadRequest(f"Cannot discard: {error}", content_type="text/plain")
    undo = request.POST.get("undo") == "1"
    verb = "Bring back" if undo else "Discard"
    try:
        if request.POST.get("confirmed") != "yes":
            preview = discard_jobs(request.user, selection, undo=undo, dry_run=True, surface="dashboard")
            return confirmation(request, "discard", f"{verb} {preview.matched} failed {ngettext('job', 'jobs', preview.matched)}?", preview, {"undo": undo})
        result = discard_jobs(request.user, selection, undo=undo, surface="dashboard",
                              allow_large=request.POST.get("allow_large") == "1")
    except TooLarge as error:
        preview = discard_jobs(request.user, selection, undo=undo, dry_run=True, surface="dashboard")
        return confirmation(request, "discard", f"{verb} {preview.matched} failed {ngettext('job', 'jobs', preview.matched)}?", preview,
                            {"too_large": True, "undo": undo}, str(error))
    return redirect("monitors:action", result.log.pk)


@staff_only
@require_POST
def circuit_force(request, name):
    """Force a circuit open or closed, or reset it: confirmed first, like every change."""
    change = request.POST.get("change", "")
    reason = request.POST.get("reason", "").strip()[:300]
    try:
        if request.POST.get("confirmed") != "yes":
            state = force_circuit(request.user, name, change, reason=reason, surface="dashboard", dry_run=True)
            titles = {"open": f"Force {name} open? Jobs that call it will wait instead",
                      "close": f"Force {name} closed? Every call goes through, failing or not",
                      "reset": f"Reset {name}? Counters cleared; the breaker decides again"}
            return confirmation(request, "force", titles[change], {"matched": 1, "state": state, "complete_count": True},
                                {"circuit": name})
        force_circuit(request.user, name, change, reason=reason, surface="dashboard")
    except (ValueError, LookupError) as error:
        return HttpResponseBadRequest(f"Cannot change circuit {name}: {error}", content_type="text/plain")
    except StoreUnavailable as error:
        return render(request, "jobwatch/confirm.html", {"action": "force", "title": f"Cannot change circuit {name}",
                                                         "error": f"the circuit store is unreachable: {error}"}, status=503)
    return redirect("monitors:circuits")


def message_selection(post):
    keys, ids = set(), set()
    for pick in post.getlist("pick"):
        kind, _, value = pick.partition(":")
        (keys if kind == "key" else ids).add(value)
    return MessageSelection(everything=post.get("everything") == "1", task=post.get("task", "").strip(),
                            task_ids=ids, keys=keys)


@staff_only
@require_POST
def purge(request, name):
    try:
        selection = message_selection(request.POST)
    except ValueError as error:
        return HttpResponseBadRequest(f"Cannot purge: {error}", content_type="text/plain")
    try:
        if request.POST.get("confirmed") != "yes":
            preview = purge_messages(request.user, name, selection, dry_run=True, surface="dashboard")
            return confirmation(request, "purge", f"Archive and remove {preview.matched} {ngettext('message', 'messages', preview.matched)} from {name}?", preview,
                                {"queue": name})
        result = purge_messages(request.user, name, selection, surface="dashboard",
                                allow_large=request.POST.get("allow_large") == "1")
    except (BrokerUnavailable, PeekUnavailable, TooLarge) as error:
        return render(request, "jobwatch/confirm.html", {"action": "purge", "title": f"Cannot purge {name}",
                                                         "error": str(error), "queue": name}, status=503 if isinstance(error, BrokerUnavailable) else 400)
    return redirect("monitors:action", result.log.pk)


@staff_only
@require_POST
def restore(request):
    ids = [value for value in request.POST.getlist("archived") if value.isdigit()]
    if not ids:
        return HttpResponseBadRequest("Pick the archived messages to restore.", content_type="text/plain")
    try:
        if request.POST.get("confirmed") != "yes":
            preview = restore_messages(request.user, ids, dry_run=True, surface="dashboard")
            return confirmation(request, "restore", f"Restore {preview.matched} {ngettext('message', 'messages', preview.matched)} to their queues?", preview)
        result = restore_messages(request.user, ids, surface="dashboard")
    except BrokerUnavailable as error:
        return render(request, "jobwatch/confirm.html", {"action": "restore", "title": "Cannot restore", "error": str(error)},
                      status=503)
    return redirect("monitors:action", result.log.pk)


@staff_only
def archive(request):
    # The message bodies stay in the database: they hold arguments unredacted, and no page shows them.
    rows = ArchivedMessage.objects.select_related("action").defer("raw").order_by("-pk")
    queue = request.GET.get("queue", "").strip()
    if queue:
        rows = rows.filter(queue=queue)
    before = request.GET.get("before", "")
    if before.isdigit():
        rows = rows.filter(pk__lt=int(before))  # keyset: a big purge's archive pages as fast as a small one
    page = list(rows[: ARCHIVE_PAGE + 1])
    older = page[ARCHIVE_PAGE - 1].pk if len(page) > ARCHIVE_PAGE else None
    return respond(request, "jobwatch/archive.html", {"rows": page[:ARCHIVE_PAGE], "older": older, "queue": queue},
                   fragments=["archive-rows"], api=["rows", "older", "queue"])


@staff_only
def action_list(request):
    entries = ActionLog.objects.order_by("-pk")
    kind = request.GET.get("action", "").strip()
    if kind:
        entries = entries.filter(action=kind)
    user = request.GET.get("user", "").strip()
    if user:
        entries = entries.filter(username=user)
    before = request.GET.get("before", "")
    if before.isdigit():
        entries = entries.filter(pk__lt=int(before))
    page = list(entries[: AUDIT_PAGE + 1])
    older = page[AUDIT_PAGE - 1].pk if len(page) > AUDIT_PAGE else None
    return respond(request, "jobwatch/actions.html", {"entries": page[:AUDIT_PAGE], "kind": kind, "user_filter": user,
                                                      "older": older}, fragments=["audit-rows"],
                   api=["entries", "older"])


@staff_only
def action_detail(request, pk):
    entry = get_object_or_404(ActionLog, pk=pk)
    archived = list(entry.archived_messages.defer("raw").order_by("pk")[:100]) if entry.action == "purge_messages" else []
    return respond(request, "jobwatch/action.html", {"entry": entry, "archived": archived,
                                                     "running": entry.outcome == ActionLog.Outcome.RUNNING},
                   fragments=["action-progress"], api=["entry", "archived", "running"])
