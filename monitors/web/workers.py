"""Workers: which are alive (their recorder's heartbeat), the queues each consumes, what each
runs now and since when. A worker that stopped writing without shutting down, with jobs still
marked running, is the one to look at: those jobs are lost or stuck until it comes back (or,
with acks_late, redelivered)."""

from collections import defaultdict
from datetime import timedelta

from django.db.models import Count, F, Window
from django.db.models.functions import RowNumber
from django.utils import timezone

from monitors.conf import setting
from monitors.models import JobExecution, RecorderProcess
from monitors.web.access import staff_only
from monitors.web.respond import respond

HEARTBEATS_MISSED = 3  # a worker is alive while its last heartbeat is younger than 3 intervals
SEEN_WITHIN = timedelta(hours=24)
RUNNING_SHOWN = 20


@staff_only
def worker_list(request):
    now = timezone.now()
    alive_within = timedelta(seconds=HEARTBEATS_MISSED * float(setting("WORKER_HEARTBEAT_SECONDS")))
    workers = {}
    for process in RecorderProcess.objects.filter(last_flush_at__gte=now - SEEN_WITHIN).exclude(node="").order_by("last_flush_at"):
        worker = workers.setdefault(process.node, new_worker(process.node))
        worker["processes"] += 1
        worker["events_recorded"] += process.events_recorded
        worker["events_dropped"] += process.events_dropped
        if worker["last_heartbeat"] is None or process.last_flush_at > worker["last_heartbeat"]:
            worker["last_heartbeat"] = process.last_flush_at
        if process.queues:
            # The main process names the queues; its latest row says whether it shut down.
            worker["queues"] = process.queues
            worker["started_at"] = process.process_started_at
            worker["stopped_at"] = process.stopped_at
            worker["host"] = process.hostname
    in_flight = JobExecution.objects.filter(state__in=["received", "started"]).exclude(worker="")
    # The first RUNNING_SHOWN of each worker and how many it has in all, in one query: on a
    # day-partitioned history each query over the in-flight jobs is planned over every partition
    # (a query per worker, or a second one for the counts, costs a plan each).
    running, counts = defaultdict(list), {}
    first_of_each = (in_flight.annotate(place=Window(RowNumber(), partition_by=F("worker"), order_by=F("started_at").asc()),
                                        in_worker=Window(Count("id"), partition_by=F("worker")))
                     .filter(place__lte=RUNNING_SHOWN)
                     .only("task_id", "task_name", "state", "queue", "worker", "worker_pid", "started_at", "received_at")
                     .order_by("worker", "started_at"))
    for job in first_of_each:
        running[job.worker].append(job)
        counts[job.worker] = job.in_worker
    for node in counts:
        workers.setdefault(node, new_worker(node))
    for node, worker in workers.items():
        worker["running"] = running.get(node, [])
        worker["running_count"] = counts.get(node, 0)
        worker["status"] = status_of(worker, now, alive_within)
    ordered = sorted(workers.values(), key=lambda worker: (STATUS_ORDER[worker["status"]], worker["node"]))
    context = {"workers": ordered, "alive_within": alive_within.total_seconds(),
               "alive": sum(1 for worker in ordered if worker["status"] == "alive")}
    return respond(request, "jobwatch/workers.html", context, fragments=["worker-table"], api=["workers", "alive"])


STATUS_ORDER = {"vanished": 0, "alive": 1, "no heartbeat": 2, "stopped": 3}


def new_worker(node):
    return {"node": node, "host": "", "processes": 0, "events_recorded": 0, "events_dropped": 0, "last_heartbeat": None,
            "queues": [], "started_at": None, "stopped_at": None}


def status_of(worker, now, alive_within):
    beat = worker["last_heartbeat"]
    if beat is None:
        return "no heartbeat"  # seen only in jobs: a worker without Jobwatch's recorder, or older rows
    if now - beat <= alive_within:
        return "alive"
    if worker["stopped_at"] and not worker["running_count"]:
        return "stopped"
    return "vanished"
