"""The dashboard's side of replay, purge and restore, and the audit log.

Every change is a POST (CSRF-checked by Django's middleware) in two steps: the first shows the
action's own dry run (how many, a sample, what would be refused and why) with a confirmation
form; the second, confirmed, runs it and goes to the action's page, which shows its progress
while it runs in the background. Permissions are checked by monitors/actions.py, which answers
a refusal with 403 and writes it to the audit log. GET never changes anything.
"""

import uuid

from django.utils.translation import ngettext

from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from monitors.actions import (TooLarge, cancel_jobs, discard_jobs, force_circuit, purge_messages, replay_jobs,
                              restore_messages)
from monitors.brokers import BrokerUnavailable, PeekUnavailable
from monitors.circuits.stores import StoreUnavailable
from monitors.models import ActionLog, ArchivedMessage
from monitors.actions.purge import MessageSelection
from monitors.actions.selection import FILTER_KEYS, BadSelection, JobSelection
from monitors.web.access import staff_only
from monitors.web.params import BadParameter, Id, Text, ids, query
from monitors.web.respond import respond

ARCHIVE_PAGE = 100
FORCE_TITLES = {"open": "Force {name} open? Jobs that call it will wait instead",
                "close": "Force {name} closed? Every call goes through, failing or not",
                "reset": "Reset {name}? Counters cleared; the breaker decides again"}
# The POST fields that carry the selection through the confirmation page unchanged.
CARRIED = ("id", "finding", "force", "pick", "task", "everything", "archived", "undo", "change", "reason", "terminate",
           *FILTER_KEYS)
AUDIT_PAGE = 100


def carried_fields(post, selection=None):
    """The fields the confirmation posts back. A job selection made from a filter is carried as
    pinned (monitors/actions/selection.py), so the confirmed action acts on the jobs the preview counted."""
    if selection is None or not selection.filters:
        return [(name, value) for name in CARRIED for value in post.getlist(name) if value]
    others = [(name, value) for name in CARRIED if name not in FILTER_KEYS for value in post.getlist(name) if value]
    return others + list(selection.filters.items())


def confirmation(request, action, title, preview, extra=None, error="", selection=None):
    context = {
        "action": action, "title": title, "preview": preview, "fields": carried_fields(request.POST, selection),
        "scope": selection.scope() if selection else [],
        "request_key": request.POST.get("request_key") or uuid.uuid4().hex, "error": error, **(extra or {}),
    }
    return render(request, "jobwatch/confirm.html", context, status=400 if error else 200)


def replay_title(count):
    return f"Replay {count} {ngettext('job', 'jobs', count)}?"


def job_selection(post, verb):
    """The jobs a replay or discard form names: ticked ids, a finding's jobs, or a filter."""
    try:
        if post.getlist("id"):
            return JobSelection.from_ids(post.getlist("id"))
        if post.get("finding"):
            return JobSelection.from_finding(post["finding"])
        return JobSelection.from_filter({key: post.get(key, "") for key in FILTER_KEYS})
    except BadSelection as error:
        raise BadParameter(error.key or "selection", f"cannot {verb}: {error}") from error


@staff_only
@require_POST
def replay(request):
    selection = job_selection(request.POST, "replay")
    force = request.POST.get("force") == "1"
    if request.POST.get("confirmed") != "yes":
        preview = replay_jobs(request.user, selection, force=force, dry_run=True, surface="dashboard")
        return confirmation(request, "replay", replay_title(preview.matched), preview, selection=selection)
    try:
        result = replay_jobs(request.user, selection, force=force, surface="dashboard", request_key=request.POST.get("request_key"),
                             allow_large=request.POST.get("allow_large") == "1")
    except TooLarge as error:
        preview = replay_jobs(request.user, selection, force=force, dry_run=True, surface="dashboard")
        return confirmation(request, "replay", replay_title(preview.matched), preview, {"too_large": True}, str(error),
                            selection=selection)
    return redirect("monitors:action", result.log.pk)


@staff_only
@require_POST
def cancel(request):
    """Cancel jobs: queued ones taken off their queue (archived), held ones revoked, running ones
    terminated when asked (monitors/actions/cancel.py); the preview says which is which."""
    selection = job_selection(request.POST, "cancel")
    terminate = request.POST.get("terminate") == "1"
    reason = request.POST.get("reason", "").strip()
    if len(reason) > 300 or "\x00" in reason:
        raise BadParameter("reason", "a reason of at most 300 characters")

    def preview_page(error=""):
        preview = cancel_jobs(request.user, selection, reason=reason, terminate=terminate, dry_run=True, surface="dashboard")
        title = f"Cancel {preview.matched} {ngettext('job', 'jobs', preview.matched)}?"
        return confirmation(request, "cancel", title, preview, {"plan": preview.log.parameters["plan"],
                            "terminate": terminate, "too_large": bool(error)}, error, selection=selection)

    try:
        if request.POST.get("confirmed") != "yes":
            return preview_page()
        result = cancel_jobs(request.user, selection, reason=reason, terminate=terminate, surface="dashboard",
                             allow_large=request.POST.get("allow_large") == "1")
    except TooLarge as error:
        return preview_page(str(error))
    return redirect("monitors:action", result.log.pk)


@staff_only
@require_POST
def discard(request):
    """Hide failed jobs from the history (the failures page's "discard this group"); undo=1 brings
    them back."""
    selection = job_selection(request.POST, "discard")
    undo = request.POST.get("undo") == "1"
    verb = "Bring back" if undo else "Discard"
    try:
        if request.POST.get("confirmed") != "yes":
            preview = discard_jobs(request.user, selection, undo=undo, dry_run=True, surface="dashboard")
            return confirmation(request, "discard", f"{verb} {preview.matched} failed {ngettext('job', 'jobs', preview.matched)}?", preview,
                                {"undo": undo}, selection=selection)
        result = discard_jobs(request.user, selection, undo=undo, surface="dashboard",
                              allow_large=request.POST.get("allow_large") == "1")
    except TooLarge as error:
        preview = discard_jobs(request.user, selection, undo=undo, dry_run=True, surface="dashboard")
        return confirmation(request, "discard", f"{verb} {preview.matched} failed {ngettext('job', 'jobs', preview.matched)}?", preview,
                            {"too_large": True, "undo": undo}, str(error), selection=selection)
    return redirect("monitors:action", result.log.pk)


@staff_only
@require_POST
def circuit_force(request, name):
    """Force a circuit open or closed, or reset it: confirmed first, like every change."""
    change = request.POST.get("change", "")
    if change not in FORCE_TITLES:
        raise BadParameter("change", f"{change[:40]!r} is not one of {', '.join(FORCE_TITLES)}")
    reason = request.POST.get("reason", "").strip()[:300]
    try:
        if request.POST.get("confirmed") != "yes":
            state = force_circuit(request.user, name, change, reason=reason, surface="dashboard", dry_run=True)
            return confirmation(request, "force", FORCE_TITLES[change].format(name=name),
                                {"matched": 1, "state": state, "complete_count": True}, {"circuit": name})
        force_circuit(request.user, name, change, reason=reason, surface="dashboard")
    except (ValueError, LookupError) as error:
        raise BadParameter("name", f"cannot change circuit {name}: {error}") from error
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
        raise BadParameter("pick", f"cannot purge: {error}") from error
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
    chosen = ids(request.POST, "archived")
    if not chosen:
        raise BadParameter("archived", "pick the archived messages to restore")
    try:
        if request.POST.get("confirmed") != "yes":
            preview = restore_messages(request.user, chosen, dry_run=True, surface="dashboard")
            return confirmation(request, "restore", f"Restore {preview.matched} {ngettext('message', 'messages', preview.matched)} to their queues?", preview)
        result = restore_messages(request.user, chosen, surface="dashboard")
    except BrokerUnavailable as error:
        return render(request, "jobwatch/confirm.html", {"action": "restore", "title": "Cannot restore", "error": str(error)},
                      status=503)
    return redirect("monitors:action", result.log.pk)


@staff_only
@query(queue=Text(), before=Id())
def archive(request):
    # The message bodies stay in the database: they hold arguments unredacted, and no page shows them.
    rows = ArchivedMessage.objects.select_related("action").defer("raw").order_by("-pk")
    queue = request.query["queue"]
    if queue:
        rows = rows.filter(queue=queue)
    if request.query["before"]:
        rows = rows.filter(pk__lt=request.query["before"])  # keyset: a big purge's archive pages as fast as a small one
    page = list(rows[: ARCHIVE_PAGE + 1])
    older = page[ARCHIVE_PAGE - 1].pk if len(page) > ARCHIVE_PAGE else None
    return respond(request, "jobwatch/archive.html", {"rows": page[:ARCHIVE_PAGE], "older": older, "queue": queue},
                   fragments=["archive-rows"], api=["rows", "older", "queue"])


@staff_only
@query(action=Text(), user=Text(), before=Id())
def action_list(request):
    entries = ActionLog.objects.order_by("-pk")
    kind, user = request.query["action"], request.query["user"]
    if kind:
        entries = entries.filter(action=kind)
    if user:
        entries = entries.filter(username=user)
    if request.query["before"]:
        entries = entries.filter(pk__lt=request.query["before"])
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
