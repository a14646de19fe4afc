"""The queue table and a queue's page: depth, age and rates from samples; its messages, peeked
live from the broker, without disturbing them."""

from django.http import Http404
from django.utils import timezone
from django.views.decorators.http import require_http_methods

from monitors.brokers import BrokerUnavailable, PeekUnavailable, open_broker
from monitors.models import QueuePause
from monitors.pausing import mark_paused
from monitors.queues import snapshot
from monitors.sampling import latest_queue_rows, queue_history
from monitors.web import charts
from monitors.web.access import staff_only
from monitors.web.respond import is_api, is_htmx, respond
from monitors.web.params import Count, Text, query
from monitors.web.windows import WINDOWS, queue_series, window_from, window_param

PAGE_SIZE = 50
SEARCH_LIMIT = 50
SEARCH_SCAN_CAP = 200_000  # messages read at most by one search, so a page cannot run away


@staff_only
def queue_list(request):
    rows = latest_queue_rows()
    live = not rows
    if live:  # no sampler has run yet (beat not started): read the broker once, say so
        rows = snapshot(ask_workers=False)
    mark_paused(rows)
    trend = queue_series(WINDOWS["1h"], "depth", [row.name for row in rows])
    for row in rows:
        row.depth_trend = trend.get(row.name, ([], []))[1][-120:]
    rows.sort(key=lambda row: (not row.trouble, row.name))
    return respond(request, "jobwatch/queues.html", {"rows": rows, "live": live}, fragments=["queue-table"])


@staff_only
@require_http_methods(["GET", "POST"])
@query(window=window_param(), offset=Count(), q=Text(max_length=200))
def queue_detail(request, name):
    window = window_from(request)
    history = queue_history(name, window.since)
    latest = history[-1] if history else None
    if is_htmx(request) or is_api(request):
        # The live parts (facts and charts) come from samples alone: no broker call per poll.
        if latest is None and is_api(request):
            raise Http404("No samples of this queue in the window")
        return respond(request, "jobwatch/queue.html", queue_summary(name, window, history, latest),
                       fragments=["queue-facts", "queue-charts"], api=["name", "latest", "pause", "window", "history"])
    offset, search = request.query["offset"], request.query["q"]
    context = {**queue_summary(name, window, history, latest), "offset": offset, "search": search,
               "messages": [], "error": "", "warning": "", "needs_confirmation": False, "now": timezone.now()}
    try:
        broker = open_broker()
    except BrokerUnavailable as error:
        context["error"] = str(error)
        return respond(request, "jobwatch/queue.html", context)
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
    return respond(request, "jobwatch/queue.html", context)


def queue_summary(name, window, history, latest):
    times = [sample.sampled_at for sample in history]

    def line(field):
        return [getattr(sample, field) for sample in history]

    return {
        "name": name, "latest": latest, "window": window, "windows": WINDOWS, "history": history,
        "pause": QueuePause.objects.filter(queue=name).first(),
        "depth_chart": charts.line_chart([("waiting", times, line("depth")), ("in flight", times, line("in_flight"))],
                                         title="Messages waiting and in flight", window=window),
        "age_chart": charts.line_chart([("oldest waiting (s)", times, line("oldest_age"))], title="Age of the oldest waiting message (s)",
                                       window=window),
        "rate_chart": charts.line_chart([("in / min", times, line("arrivals_per_minute")), ("out / min", times, line("drains_per_minute"))],
                                        title="Arrivals and drains per minute", window=window),
    }


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
