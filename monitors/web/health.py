"""/healthz and /metrics: for load balancers, uptime checks and Prometheus.

/healthz answers 200 when the database answers and the monitor's periodic tasks ran recently,
503 otherwise; it says which check failed and nothing else, so it needs no login.

/metrics speaks the Prometheus text format with celery-exporter's metric names and labels
(celery_task_sent_total{name,hostname,queue_name}, celery_task_failed_total{…,exception},
celery_task_runtime{…} and celery_task_queue_wait_time{…} histograms, celery_queue_length{queue_name},
…) so that dashboards and alert
rules written for it keep working, plus what it lacks (jobwatch_*): the oldest message's age per
queue, open findings by kind, circuit state and jobs waiting, recorder drops, the monitor's last
runs, and each periodic task's last success and missed runs (kept by the periodic detector on each
pass, so up to a detector interval behind), and how far behind a read replica is. Everything is read from the database at scrape time (a few hundred rows), never from the
broker — and from the primary, even where the pages read a replica: a counter must never go
back, as it would if reads moved between the primary and a replica seconds behind it. With
JOBWATCH["METRICS_TOKEN"] set, Prometheus sends "Authorization: Bearer <token>";
without it only logged-in staff may read it.
"""

import hmac

from django.db import DatabaseError, connection
from django.db.models import Count, Sum
from django.http import HttpResponse, JsonResponse
from django.utils import timezone
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from monitors import metric_histograms, partitions
from monitors.heartbeats import stale_tasks
from monitors.circuits.machine import STATES
from monitors.circuits.status import jobs_waiting_by_circuit
from monitors.conf import setting
from monitors.models import (Circuit, Finding, Incident, MonitorHeartbeat, PeriodicTally, RecorderProcess, Severity,
                             TaskCounter)
from monitors.periodic.schedule import entries
from monitors.replica import primary_reads, replica_status
from monitors.sampling import latest_queue_rows
from monitors.web.metric_labels import OTHER, Folder, registered_tasks

COUNTERS = {
    "sent": "Sent when a task message is published.",
    "started": "Sent just before the worker executes the task.",
    "succeeded": "Sent if the task executed successfully.",
    "failed": "Sent if the execution of the task failed.",
    "retried": "Sent if the task failed, but will be retried in the future.",
    "revoked": "Sent if the task has been revoked.",
    "rejected": "The task was rejected by the worker, possibly to be re-queued or moved to a dead letter queue.",
}
TASK_LABELS = ["name", "hostname", "queue_name"]


def healthz(request):
    checks, healthy = {}, True
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = "ok"
    except DatabaseError as error:
        checks["database"] = f"unreachable: {type(error).__name__}"
        return JsonResponse({"status": "fail", "checks": checks}, status=503)

    stale = stale_tasks(timezone.now())
    checks["monitor"] = "ok" if not stale else "stale: " + ", ".join(
        f"{task} last ran {last:%Y-%m-%d %H:%M:%S}" if last else f"{task} never ran" for task, last, _ in stale)
    healthy = not stale
    body = {"status": "ok" if healthy else "fail", "checks": checks}
    if stale:
        body["hint"] = ("Run celery beat for the Celery app that calls watch_celery_app(app) (or a worker with -B); "
                        "just after beat starts, allow a minute.")
    return JsonResponse(body, status=200 if healthy else 503)


def metrics(request):
    token = setting("METRICS_TOKEN")
    if token:
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), token.encode()):
            return HttpResponse("a valid bearer token is needed\n", status=401, content_type="text/plain")
    elif not (request.user.is_authenticated and request.user.is_active and request.user.is_staff):
        return HttpResponse("log in as staff, or set JOBWATCH['METRICS_TOKEN'] for Prometheus\n", status=403,
                            content_type="text/plain")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(JobwatchCollector())
    with primary_reads():
        body = generate_latest(registry)
    return HttpResponse(body, content_type="text/plain; version=0.0.4; charset=utf-8")


class JobwatchCollector:
    def collect(self):
        yield from task_counters()
        yield from queue_gauges()
        yield from jobwatch_gauges()
        yield from periodic_metrics()
        yield from replica_gauges()
        yield from partition_gauges()


def task_counters():
    rows = list(TaskCounter.objects.values_list("metric", "name", "hostname", "queue_name", "exception", "le", "value"))
    names, queues = fold_labels(rows)
    families = {metric: CounterMetricFamily(f"celery_task_{metric}", help_text,
                                            labels=TASK_LABELS + (["exception"] if metric == "failed" else []))
                for metric, help_text in COUNTERS.items()}
    counters = {}
    # The rows of each histogram counted with the bounds set now: {stored metric: (kind, part)}.
    current = {kind: metric_histograms.bounds(kind) for kind in metric_histograms.HISTOGRAMS}
    parts = {metric_histograms.stored_metric(kind, part, kind_bounds): (kind, part)
             for kind, kind_bounds in current.items() for part in ("bucket", "sum")}
    histograms = {kind: {} for kind in current}
    for metric, name, hostname, queue, exception, le, value in rows:
        labels = (names(name), hostname, queues(queue))
        if metric in families:
            key = (metric, labels + ((exception,) if metric == "failed" else ()))
            counters[key] = counters.get(key, 0) + value  # folded names add up
        elif metric in parts:
            kind, part = parts[metric]
            series = histograms[kind].setdefault(labels, {"buckets": {}, "sum": 0.0})
            if part == "bucket":
                series["buckets"][le] = series["buckets"].get(le, 0) + value
            else:
                series["sum"] += value
    for (metric, labels), value in counters.items():
        families[metric].add_metric(list(labels), value)
    yield from families.values()
    for kind, (name, help_text, _) in metric_histograms.HISTOGRAMS.items():
        family = HistogramMetricFamily(name, help_text, labels=TASK_LABELS)
        les = [metric_histograms.le_label(bound) for bound in current[kind]] + ["+Inf"]
        for labels, series in histograms[kind].items():
            family.add_metric(list(labels), [(le, series["buckets"].get(le, 0)) for le in les], series["sum"])
        yield family
    folded = GaugeMetricFamily("jobwatch_metrics_folded_label_values",
                               f"Distinct task or queue names counted under {OTHER!r}: not a name, or past "
                               "METRICS_MAX_LABEL_VALUES.", labels=["label"])
    folded.add_metric(["name"], len(names.folded))
    folded.add_metric(["queue_name"], len(queues.folded))
    yield folded


def fold_labels(rows):
    """The Folders of task names and queue names: by the jobs each sent, registered tasks kept."""
    name_activity, queue_activity = {}, {}
    for metric, name, _, queue, _, _, value in rows:
        weight = value if metric in COUNTERS else 0
        name_activity[name] = name_activity.get(name, 0) + weight
        queue_activity[queue] = queue_activity.get(queue, 0) + weight
    cap = setting("METRICS_MAX_LABEL_VALUES")
    return Folder(name_activity, cap, registered_tasks()), Folder(queue_activity, cap)


def queue_gauges():
    length = GaugeMetricFamily("celery_queue_length", "The number of message in broker queue.", labels=["queue_name"])
    consumers = GaugeMetricFamily("celery_active_consumer_count", "The number of active consumer in broker queue.",
                                  labels=["queue_name"])
    age = GaugeMetricFamily("jobwatch_queue_oldest_message_age_seconds", "How long the oldest waiting message has waited.",
                            labels=["queue_name"])
    in_flight = GaugeMetricFamily("jobwatch_queue_in_flight", "Messages delivered to workers and not yet acknowledged.",
                                  labels=["queue_name"])
    for row in latest_queue_rows():
        if row.depth is not None:
            length.add_metric([row.name], row.depth)
        if row.consumers is not None:
            consumers.add_metric([row.name], row.consumers)
        if row.oldest_age is not None:
            age.add_metric([row.name], row.oldest_age)
        if row.in_flight is not None:
            in_flight.add_metric([row.name], row.in_flight)
    yield from (length, consumers, age, in_flight)


def jobwatch_gauges():
    findings = GaugeMetricFamily("jobwatch_open_findings", "Open findings, by kind and severity.", labels=["kind", "severity"])
    for kind, severity, count in (Finding.objects.filter(status="open").values_list("kind", "severity")
                                  .annotate(count=Count("id")).order_by()):
        findings.add_metric([kind, severity], count)
    yield findings

    # One problem, one series: alert on incidents rather than findings, which count its evidence.
    incidents = GaugeMetricFamily("jobwatch_active_incidents", "Incidents not over yet (one per problem), by severity.",
                                  labels=["severity"])
    active = dict(Incident.objects.filter(state__in=Incident.ACTIVE).values_list("severity").annotate(count=Count("id")).order_by())
    for severity in Severity.values:
        incidents.add_metric([severity], active.get(severity, 0))
    yield incidents

    circuits = GaugeMetricFamily("jobwatch_circuit_state", "1 for the state each circuit is in.", labels=["circuit", "state"])
    waiting = GaugeMetricFamily("jobwatch_circuit_jobs_waiting", "Jobs waiting for the circuit to close.", labels=["circuit"])
    states = dict(Circuit.objects.values_list("name", "state"))
    waiting_by_circuit = jobs_waiting_by_circuit(list(states))
    for name, state in states.items():
        for candidate in STATES:
            circuits.add_metric([name, candidate], 1.0 if candidate == state else 0.0)
        waiting.add_metric([name], waiting_by_circuit[name]["count"])
    yield circuits
    yield waiting

    totals = RecorderProcess.objects.aggregate(recorded=Sum("events_recorded"), overflow=Sum("events_dropped_overflow"),
                                               error=Sum("events_dropped_error"))
    dropped = CounterMetricFamily("jobwatch_recorder_events_dropped", "Job events the recorder could not write.",
                                  labels=["reason"])
    dropped.add_metric(["buffer_full"], totals["overflow"] or 0)
    dropped.add_metric(["write_error"], totals["error"] or 0)
    yield dropped
    recorded = CounterMetricFamily("jobwatch_recorder_events_recorded", "Job events the recorder wrote.")
    recorded.add_metric([], totals["recorded"] or 0)
    yield recorded

    last_run = GaugeMetricFamily("jobwatch_monitor_last_run_timestamp_seconds", "When each periodic task last ran.",
                                 labels=["task"])
    for task, moment in MonitorHeartbeat.objects.values_list("task", "last_run_at"):
        last_run.add_metric([task], moment.timestamp())
    yield last_run


def periodic_metrics():
    """One series per entry of the schedule now (an entry removed from it leaves the metrics):
    alert on `time() - jobwatch_periodic_last_success_timestamp_seconds > …` per entry, or on
    `increase(jobwatch_periodic_missed_runs_total[1h]) > 0`."""
    success = GaugeMetricFamily("jobwatch_periodic_last_success_timestamp_seconds",
                                "When each periodic task's last successful run finished.", labels=["entry"])
    missed = CounterMetricFamily("jobwatch_periodic_missed_runs", "Runs of each periodic task that were due and not sent.",
                                 labels=["entry"])
    names = set(entries())
    for name, last_success, missed_total in PeriodicTally.objects.filter(entry__in=names).values_list(
            "entry", "last_success_at", "missed_runs_total").order_by("entry"):
        if last_success is not None:
            success.add_metric([name], last_success.timestamp())
        missed.add_metric([name], missed_total)
    yield success
    yield missed


def partition_gauges():
    """Only where the history is partitioned by day (PARTITION_HISTORY): alert on catch-all rows
    above 0 for long — the upkeep task (jobwatch.prepare_partitions) is not making days ahead."""
    found = partitions.catch_all(connection)
    if not found:
        return
    days = GaugeMetricFamily("jobwatch_history_day_partitions", "Day partitions of each history table.", labels=["table"])
    rows = GaugeMetricFamily("jobwatch_history_catch_all_rows",
                             "Rows in a history table's catch-all partition: days that had no partition of their own.",
                             labels=["table"])
    for table, (day_count, catch_all_rows) in found.items():
        days.add_metric([table], day_count)
        rows.add_metric([table], catch_all_rows)
    yield days
    yield rows


def replica_gauges():
    """Only where JOBWATCH["READ_DATABASE"] names a replica. No lag while it cannot be reached (or
    is not a standby): alert on `jobwatch_replica_reachable == 0` and on the lag."""
    status = replica_status()
    if status is None:
        return
    reachable = GaugeMetricFamily("jobwatch_replica_reachable", "1 when the read replica answers.", labels=["alias"])
    reachable.add_metric([status["alias"]], 1.0 if status["reachable"] else 0.0)
    yield reachable
    lag = GaugeMetricFamily("jobwatch_replica_lag_seconds", "How far the read replica is behind the primary.",
                            labels=["alias"])
    if status["lag_seconds"] is not None:
        lag.add_metric([status["alias"]], status["lag_seconds"])
    yield lag
