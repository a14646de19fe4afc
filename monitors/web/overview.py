"""The overview: is anything wrong, and since when? The open incidents first (in triage order,
with their usual fix and where their jobs are), then open findings, queues in trouble, open
circuits, throughput and failure rate (from the per-minute tallies), the slowest tasks (from the
time histograms), queue age (from the samples),
jobs the recorder lost, the periodic monitor's own health, and how far behind the replica the
history is read from is (monitors/replica.py), where there is one."""

from dataclasses import replace
from datetime import timedelta

from django.db.models import Count, Max, Q, Sum
from django.utils import timezone

from monitors.heartbeats import WATCHED, heartbeat_rows, stale_tasks
from monitors.models import Circuit, CircuitState, Finding, Incident, RecorderProcess
from monitors.pausing import mark_paused
from monitors.replica import replica_status
from monitors.sampling import latest_queue_rows
from monitors.web import charts
from monitors.web.access import staff_only
from monitors.web.incidents import incident_rows
from monitors.web.respond import htmx_target, respond
from monitors.web.task_speed import slowest_tasks
from monitors.web.triage import in_triage_order
from monitors.web.params import query
from monitors.web.windows import (WINDOWS, bucket_times, failure_rates, per_minute, queue_peaks, tally_series, window_from,
                                  window_param)

SEVERITIES = ("critical", "warning", "info")
INCIDENTS_SHOWN = 5
FINDINGS_SHOWN = 10
RECORDER_WINDOW = timedelta(hours=24)


@staff_only
@query(window=window_param())
def overview(request):
    window = window_from(request)
    target = htmx_target(request)
    # A poll of one fragment computes that fragment only.
    context = {"window": window, "windows": WINDOWS,
               **(health() if target != "overview-charts" else {}),
               **(activity(window) if target != "overview-health" else {})}
    return respond(request, "jobwatch/overview.html", context, fragments=["overview-health", "overview-charts"],
                   api=["window", "incidents", "incidents_more", "open_incidents", "incidents_by_severity", "findings_by_severity",
                        "open_findings", "top_findings", "findings_more", "queues_in_trouble", "open_circuits", "recorder",
                        "monitor", "stale", "replica", "throughput_now", "failure_rate_now", "series", "slowest_tasks"])


def health():
    # First: asked afresh, so that this page's own reads follow what the tile says.
    replica = replica_status()
    active = Incident.objects.filter(state__in=Incident.ACTIVE)
    incidents_by_severity = counts_by_severity(active)
    open_findings = Finding.objects.filter(status=Finding.Status.OPEN)
    findings_by_severity = counts_by_severity(open_findings)
    incidents = incident_rows(in_triage_order(active)[:INCIDENTS_SHOWN])
    top = list(in_triage_order(open_findings)[:FINDINGS_SHOWN])
    queues = mark_paused(latest_queue_rows())
    since = timezone.now() - RECORDER_WINDOW
    beats = heartbeat_rows()
    recorder = RecorderProcess.objects.filter(last_flush_at__gte=since).aggregate(
        processes=Count("id"), recorded=Sum("events_recorded"), dropped_overflow=Sum("events_dropped_overflow"),
        dropped_error=Sum("events_dropped_error"), write_errors=Sum("write_errors"), last_flush=Max("last_flush_at"),
        failing=Count("id", filter=Q(events_dropped_error__gt=0) | Q(events_dropped_overflow__gt=0)))
    recorder["dropped"] = (recorder["dropped_overflow"] or 0) + (recorder["dropped_error"] or 0)
    open_incidents, open_finding_count = sum(incidents_by_severity.values()), sum(findings_by_severity.values())
    return {
        "incidents": incidents, "open_incidents": open_incidents, "incidents_more": max(open_incidents - len(incidents), 0),
        "incidents_by_severity": list(incidents_by_severity.items()),
        "findings_by_severity": list(findings_by_severity.items()), "open_findings": open_finding_count,
        "top_findings": top, "findings_more": max(open_finding_count - len(top), 0),
        "queues_in_trouble": [row for row in queues if row.trouble],
        "queues_paused": [row for row in queues if row.pause is not None],
        "queues_total": len(queues),
        "waiting_total": sum(row.depth or 0 for row in queues),
        "open_circuits": list(Circuit.objects.exclude(state__in=[CircuitState.CLOSED]).order_by("name")),
        "recorder": recorder,
        "monitor": [beats[task] for task in sorted(beats) if task in WATCHED],
        # Read here, the page's banner (monitor_banner) shows it rather than asking again.
        "stale": stale_tasks(rows=beats),
        "replica": replica,
    }


def counts_by_severity(queryset):
    counted = {row["severity"]: row["n"] for row in queryset.values("severity").annotate(n=Count("id")).order_by()}
    return {severity: counted.get(severity, 0) for severity in SEVERITIES}


def activity(window):
    times, series = tally_series(window, ["succeeded", "failed"])
    succeeded, failed = series[("succeeded", "")], series[("failed", "")]
    recent = replace(WINDOWS["15m"], end=window.until)
    if window.bucket == recent.bucket and window.span >= recent.span:
        # The window's minutes hold the last 15 (the default hour does): no second read.
        recent_times = bucket_times(recent)
        good, bad = sum(succeeded[-len(recent_times):]), sum(failed[-len(recent_times):])
    else:
        recent_times, now_series = tally_series(recent, ["succeeded", "failed"])
        good, bad = sum(now_series[("succeeded", "")]), sum(now_series[("failed", "")])
    # The buckets start at a whole minute: the span they cover is a little over 15 minutes.
    minutes = max((recent.until - recent_times[0]).total_seconds() / 60, 1)
    ages = queue_peaks(window, "oldest_age")
    return {
        "throughput_now": round((good + bad) / minutes, 1),
        "failure_rate_now": round(100 * bad / (good + bad), 1) if good + bad else None,
        "series": {"times": times, "succeeded": succeeded, "failed": failed},
        "slowest_tasks": slowest_tasks(window),
        "throughput_chart": charts.line_chart(
            [("succeeded", times, per_minute(succeeded, window)), ("failed", times, per_minute(failed, window))],
            title="Jobs finished per minute", stacked=True, window=window),
        "failure_chart": charts.line_chart([("failed %", times, failure_rates(failed, succeeded))],
                                           title="Failure rate (% of finished jobs)", window=window),
        "age_chart": charts.line_chart([(queue, xs, ys) for queue, (xs, ys) in sorted(ages.items())],
                                       title="Oldest waiting message per queue (s)", window=window),
    }
