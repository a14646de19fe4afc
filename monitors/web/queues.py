"""The queue table and a queue's page: depth, age and rates from samples; its messages, peeked
live from the broker, without disturbing them."""

from datetime import timedelta

from django.http import Http404
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_http_methods

from monitors.brokers import BrokerUnavailable, PeekUnavailable, open_broker
from monitors.queues import snapshot
from monitors.sampling import latest_queue_rows, queue_history
from monitors.web.access import staff_only

PAGE_SIZE = 50
SEARCH_LIMIT = 50
SEARCH_SCAN_CAP = 200_000  # messages read at most by one search, so a page cannot run away


@staff_only
def queue_list(request):
    rows = latest_queue_rows()
    live = not rows
    if live:  # no sampler has run yet (beat not started): read the broker once, say so
        rows = snapshot(ask_workers=False)
    return render(request, "jobwatch/queues.html", {"rows": rows, "live": live})


@staff_only
@require_http_methods(["GET", "POST"])
def queue_detail(request, name):
    history = queue_history(name, timezone.now() - timedelta(hours=1))
    latest = history[-1] if history else None
    offset_text = request.GET.get("offset", "")
    offset = int(offset_text) if offset_text.isdigit() else 0
    search = request.GET.get("q", "").strip()
    context = {"name": name, "latest": latest, "history": history[-60:], "offset": offset, "search": search,
               "messages": [], "error": "", "warning": "", "needs_confirmation": False, "now": timezone.now()}
    try:
        broker = open_broker()
    except BrokerUnavailable as error:
        context["error"] = str(error)
        return render(request, "jobwatch/queue.html", context)
    try:
        context["warning"] = broker.peek_warning
        # A peek that changes something (RabbitMQ) is a POST the operator confirmed, never a GET.
        if broker.peek_warning and request.method != "POST":
            context["needs_confirmation"] = True
        elif search:
            context["messages"], context["scanned"] = search_queue(broker, name, search)
        else:
            context["messages"] = broker.peek(name, offset, PAGE_SIZE)
            context["next_offset"] = offset + PAGE_SIZE if len(context["messages"]) == PAGE_SIZE else None
    except (BrokerUnavailable, PeekUnavailable) as error:
        context["error"] = str(error)
    finally:
        broker.close()
    unknown = latest is None and not context["messages"] and not search
    if unknown and not context["error"] and not context["needs_confirmation"]:
        raise Http404("No such queue")
    return render(request, "jobwatch/queue.html", context)


def search_queue(broker, queue, text):
    """Messages whose task name contains `text`, or whose id is `text`; (matches, scanned)."""
    needle = text.lower()
    found, scanned = [], 0
    for position, message in enumerate(broker.scan(queue, clean=True)):
        scanned += 1
        if message.task_id == text or needle in message.task_name.lower():
            message.position = position
            found.append(message)
            if len(found) >= SEARCH_LIMIT:
                break
        if scanned >= SEARCH_SCAN_CAP:
            break
    return found, scanned
