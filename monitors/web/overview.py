"""The overview: is anything wrong, and since when? Open findings by severity, queues in trouble,
open circuits, throughput and failure rate (from the per-minute tallies), queue age (from the
samples), jobs the recorder lost, and the periodic monitor's own health."""

from datetime import timedelta

from django.db.models import Count, Max, Q, Sum
from django.utils import timezone

from monitors.alerts.heartbeats import WATCHED, stale_tasks
from monitors.models import Circuit, CircuitState, Finding, MonitorHeartbeat, RecorderProcess
from monitors.sampling import latest_queue_rows
from monitors.web import charts
from monitors.web.access import staff_only
from monitors.web.respond import htmx_target, respond
from monitors.web.windows import WINDOWS, failure_rates, per_minute, queue_series, tally_series, window_from

SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}
RECORDER_WINDOW = timedelta(hours=24)


@staff_only
def overview(request):
    window = window_from(request)
    target = htmx_target(request)
    # A poll of one fragment computes that fragment only.
    context = {"window": window, "windows": WINDOWS,
               **(health() if target != "overview-charts" else {}),
               **(activity(window) if target != "overview-health" else {})}
    return respond(request, "jobwatch/overview.html", context, fragments=["overview-health", "overview-charts"],
                   api=["window", "findings_by_severity", "top_findings", "queues_in_trouble", "open_circuits", "recorder",
                        "monitor", "stale", "throughput_now", "failure_rate_now", "series"])


def health():
    open_findings = Finding.objects.filter(status=Finding.Status.OPEN)
    by_severity = {row["severity"]: row["n"] for row in open_findings.values("severity").annotate(n=Count("id")).order_by()}
    top = sorted(open_findings.order_by("-last_seen")[:50], key=lambda finding: (SEVERITY_ORDER.get(finding.severity, 9), -finding.last_seen.timestamp()))[:10]
    queues = latest_queue_rows()
    since = timezone.now() - RECORDER_WINDOW
    recorder = RecorderProcess.objects.filter(last_flush_at__gte=since).aggregate(
        processes=Count("id"), recorded=Sum("events_recorded"), dropped_overflow=Sum("events_dropped_overflow"),
        dropped_error=Sum("events_dropped_error"), write_errors=Sum("write_errors"), last_flush=Max("last_flush_at"),
        failing=Count("id", filter=Q(events_dropped_error__gt=0) | Q(events_dropped_overflow__gt=0)))
    recorder["dropped"] = (recorder["dropped_overflow"] or 0) + (recorder["dropped_error"] or 0)
    return {
        "findings_by_severity": [(severity, by_severity.get(severity, 0)) for severity in ("critical", "warning", "info")],
        "open_findings": sum(by_severity.values()),
        "top_findings": top,
        "queues_in_trouble": [row for row in queues if row.trouble],
        "queues_total": len(queues),
        "waiting_total": sum(row.depth or 0 for row in queues),
        "open_circuits": list(Circuit.objects.exclude(state__in=[CircuitState.CLOSED]).order_by("name")),
        "recorder": recorder,
        "monitor": list(MonitorHeartbeat.objects.filter(task__in=list(WATCHED)).order_by("task")),
        "stale": stale_tasks(),
    }


def activity(window):
    times, series = tally_series(window, ["succeeded", "failed"])
    succeeded, failed = series[("succeeded", "")], series[("failed", "")]
    recent = WINDOWS["15m"]
    recent_times, now_series = tally_series(recent, ["succeeded", "failed"])
    good, bad = sum(now_series[("succeeded", "")]), sum(now_series[("failed", "")])
    # The buckets start at a whole minute: the span they cover is a little over 15 minutes.
    minutes = max((timezone.now() - recent_times[0]).total_seconds() / 60, 1)
    ages = queue_series(window, "oldest_age")
    return {
        "throughput_now": round((good + bad) / minutes, 1),
        "failure_rate_now": round(100 * bad / (good + bad), 1) if good + bad else None,
        "series": {"times": times, "succeeded": succeeded, "failed": failed},
        "throughput_chart": charts.line_chart(
            [("succeeded", times, per_minute(succeeded, window)), ("failed", times, per_minute(failed, window))],
            title="Jobs finished per minute", stacked=True),
        "failure_chart": charts.line_chart([("failed %", times, failure_rates(failed, succeeded))],
                                           title="Failure rate (% of finished jobs)"),
        "age_chart": charts.line_chart([(queue, xs, ys) for queue, (xs, ys) in sorted(ages.items())],
                                       title="Oldest waiting message per queue (s)"),
    }
