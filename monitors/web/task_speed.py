"""Each task's speed: the Tasks page (every task over the window, slowest first) and a task's
page (its runtime and queue-wait percentiles, how they went over time, the histogram of both,
and the same window a day before, to answer "is this task slower than yesterday?").

Runtime is started → finished of jobs that succeeded or failed; queue wait is published (or the
eta it was told to wait for) → started, of every delivery, retries included. Both come from the
recorder's fixed-bucket histograms (JobHistogram, monitors/web/speeds.py), so they cost the same
at any history size; percentiles are estimates within a bucket (monitors/timing.py)."""

from datetime import timedelta

from monitors import timing
from monitors.models import JobExecution
from monitors.web import charts
from monitors.web.access import staff_only
from monitors.web.params import BadParameter, Choice, Text, query
from monitors.web.respond import respond
from monitors.web.speeds import (RUNTIME, WAIT, TaskTimes, earlier, percentile_series, speeds_by_task, task_times,
                                 times_by_measure)
from monitors.web.windows import WINDOWS, window_from, window_param

SORTS = {
    "p95": "runtime p95, slowest first",
    "wait": "queue wait p95, longest first",
    "time": "time spent in all (runtime × jobs), most first",
    "jobs": "jobs finished, most first",
    "name": "name",
}
SLOWEST_OF = 1000  # a task's page lists the slowest of its newest this many jobs
SLOWEST_REACH = (timedelta(days=1), timedelta(days=7), None)  # where slowest_recent_jobs looks, in turn
SLOWEST_SHOWN = 10


@staff_only
@query(window=window_param("1h"), sort=Choice(SORTS, default="p95"))
def task_list(request):
    window = window_from(request)
    rows = task_rows(window)
    sort = request.query["sort"]
    rows.sort(key=SORT_KEYS[sort])
    context = {"window": window, "windows": WINDOWS, "sort": sort, "sorts": SORTS, "tasks": rows,
               "before_label": before_label(window)}
    return respond(request, "jobwatch/tasks.html", context, fragments=["task-table"], api=["window", "sort", "tasks"])


SORT_KEYS = {
    "p95": lambda row: (-(row["runtime"].p95 or -1), row["name"]),
    "wait": lambda row: (-(row["wait"].p95 or -1), row["name"]),
    "time": lambda row: (-(row["runtime_total"] or 0), row["name"]),
    "jobs": lambda row: (-row["runtime"].count, row["name"]),
    "name": lambda row: row["name"],
}


def task_rows(window):
    """Every task with a job that finished or started in the window: its runtime and wait, its
    failures, and its runtime p95 in the window before."""
    both = times_by_measure(window, (RUNTIME, WAIT))  # one read of the window for the two
    runtime = both[RUNTIME]
    waits = {name: times.speed for name, times in both[WAIT].items()}
    before = speeds_by_task(earlier(window)[0], RUNTIME)
    rows = []
    for name in sorted(set(runtime) | set(waits)):
        times = runtime.get(name) or TaskTimes()
        speed = times.speed
        p95_before = before[name].p95 if name in before else None
        rows.append({
            "name": name, "runtime": speed, "wait": waits.get(name) or timing.Speed.of({}),
            "runtime_total": times.seconds, "failed": times.failed,
            "p95_before": p95_before, "p95_change": change(speed.p95, p95_before),
        })
    return rows


def slowest_tasks(window, shown=5):
    """The `shown` tasks with the highest runtime p95 over the window (for the Overview)."""
    runtime = speeds_by_task(window, RUNTIME)
    ranked = sorted(runtime.items(), key=lambda item: (-(item[1].p95 or 0), item[0]))
    return [{"name": name, "runtime": speed} for name, speed in ranked[:shown] if speed.count]


def change(now, before):
    """now / before, when both are known (1.0 = the same)."""
    if now is None or not before:
        return None
    return now / before


def before_label(window):
    _, shift = earlier(window)
    return "the week before" if shift.days >= 7 else "a day before"


@staff_only
@query(window=window_param("1h"), name=Text(max_length=255))
def task_detail(request):
    window = window_from(request)
    name = request.query["name"]
    if not name:
        raise BadParameter("name", "which task? (?name=the task's name, as on the Tasks page)")
    # Each read takes runtime and wait together: a task's page is four reads, not eight.
    now = task_times(window, name, (RUNTIME, WAIT))
    runtime_times, wait_times = now[RUNTIME], now[WAIT]
    runtime, wait = runtime_times.speed, wait_times.speed
    before_window, _ = earlier(window)
    before = task_times(before_window, name, (RUNTIME, WAIT))
    runtime_before, wait_before = before[RUNTIME].speed, before[WAIT].speed
    histogram = histogram_rows(runtime_times.counts, wait_times.counts)
    times, lines = percentile_series(window, name, {RUNTIME: (0.5, 0.95, 0.99), WAIT: (0.5, 0.95)})
    runtime_lines, wait_lines = lines[RUNTIME], lines[WAIT]
    context = {
        "name": name, "window": window, "windows": WINDOWS, "before_label": before_label(window),
        "runtime": runtime, "wait": wait, "runtime_before": runtime_before, "wait_before": wait_before,
        "failed": runtime_times.failed,
        "measures": [
            {"label": "Runtime", "now": runtime, "before": runtime_before,
             "change": change(runtime.p95, runtime_before.p95)},
            {"label": "Queue wait", "now": wait, "before": wait_before, "change": change(wait.p95, wait_before.p95)},
        ],
        "histogram": histogram,
        "series": {"times": times, "runtime": {str(key): value for key, value in runtime_lines.items()},
                   "wait": {str(key): value for key, value in wait_lines.items()}},
        "histogram_chart": charts.bar_chart(
            [row["label"] for row in histogram],
            [("runtime", [row["runtime"] for row in histogram]), ("queue wait", [row["wait"] for row in histogram])],
            title=f"Jobs by time, last {window.label}", y_title="jobs"),
        "runtime_chart": charts.line_chart(
            [(f"p{round(fraction * 100)}", times, line) for fraction, line in runtime_lines.items()],
            title=f"Runtime percentiles per {point_span(times)} (s)", window=window),
        "wait_chart": charts.line_chart(
            [(f"p{round(fraction * 100)}", times, line) for fraction, line in wait_lines.items()],
            title=f"Queue wait percentiles per {point_span(times)} (s)", window=window),
        "slowest": slowest_recent_jobs(name, window.until),
        "slowest_of": SLOWEST_OF,
    }
    return respond(request, "jobwatch/task.html", context, fragments=["task-speed"],
                   api=["name", "window", "runtime", "wait", "failed", "runtime_before", "wait_before", "histogram", "series",
                        "slowest"])


def point_span(times):
    """"min", "15 min", "hour", "2 h": what one point of a percentile line spans."""
    seconds = int((times[1] - times[0]).total_seconds()) if len(times) > 1 else 60
    if seconds >= 3600:
        return "hour" if seconds == 3600 else f"{seconds // 3600} h"
    return "min" if seconds == 60 else f"{seconds // 60} min"


def histogram_rows(runtime_counts, wait_counts):
    """One row per bucket from the first to the last that counted a job (either measure)."""
    used = [upper for upper in timing.UPPER_BOUNDS_MS if runtime_counts.get(upper) or wait_counts.get(upper)]
    if not used:
        return []
    bounds = [upper for upper in timing.UPPER_BOUNDS_MS if used[0] <= upper <= used[-1]]
    return [{"upper_ms": upper, "label": timing.bucket_label(upper), "runtime": runtime_counts.get(upper, 0),
             "wait": wait_counts.get(upper, 0)} for upper in bounds]


def slowest_recent_jobs(name, until):
    """The slowest of the task's newest SLOWEST_OF jobs enqueued by `until`: their ids and
    runtimes through the task-and-time index (a bounded read, however many jobs the task has),
    then the few shown. (A range on enqueued_at rather than IS NOT NULL, which the planner would
    rather serve from the time-only index, filtering on the task.)

    Looked for in the last day first, then the last week, then all history: a busy task finds them
    in the newest day, and over a day-partitioned history that query is planned over one or two
    partitions rather than all of them. Only ids and runtimes come back (a thousand times made into
    datetimes cost more than the rest of it); the look-up of the ten shown is bounded by the same
    range, so that it reads only the days they can be in."""
    for reach in SLOWEST_REACH:
        jobs = JobExecution.objects.filter(task_name=name, enqueued_at__lte=until)
        if reach is not None:
            jobs = jobs.filter(enqueued_at__gt=until - reach)
        newest = list(jobs.order_by("-enqueued_at").values_list("id", "runtime")[:SLOWEST_OF])
        if len(newest) >= SLOWEST_OF:
            break
    slowest = [pk for pk, _ in sorted((row for row in newest if row[1] is not None), key=lambda row: -row[1])[:SLOWEST_SHOWN]]
    if not slowest:
        return []
    shown = (jobs.only("task_id", "task_name", "state", "runtime", "started_at", "worker", "args", "kwargs")
             .in_bulk(slowest))
    return [shown[pk] for pk in slowest if pk in shown]
