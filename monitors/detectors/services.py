"""Services failing with no circuit breaker: jobs that failed or are retrying because the other
side failed, clustered by the service the recorder read from their exceptions (error_target,
error_status, error_kind: monitors/recording/targets.py), so the operator learns which service is
down and where a breaker is missing.

- Jobs whose error names an address: one finding per address.
- Jobs whose error says a service failed (a status, a network kind) but names no address: one
  task's jobs of one exception type and status, when they are most of that task's jobs — the
  task's dependency is down, whichever it is.
- Errors that say nothing of the other side (TypeError, KeyError) are bugs, not outages: the
  failure-rate rule (backlog.py) covers them.

Jobs that go through a breaker (`circuit` set) are the circuits detector's.
"""

from collections import Counter, defaultdict
from datetime import timedelta

from django.db.models import Count, Q

from monitors.detectors.base import Problem, short, threshold
from monitors.models import JobExecution

NAME = "services"
# At most this many failed or retried jobs of the window are read, newest first.
FAILURES_READ = 50_000
KIND_WORDS = {"http": "HTTP error", "connection": "connection failed", "timeout": "timed out",
              "dns": "host name not found", "tls": "TLS failed", "network": "network unreachable"}
SAMPLE_JOBS = 10
COLUMNS = ("id", "task_id", "task_name", "queue", "state", "exception_type", "error_target", "error_status", "error_kind",
           "finished_at")


def detect(now):
    span = threshold("SERVICE_FAILURE_SECONDS")
    since = now - timedelta(seconds=span)
    failures = [dict(zip(COLUMNS, row, strict=True)) for row in failed_calls(since, now)]
    by_target, by_task = defaultdict(list), defaultdict(lambda: defaultdict(list))
    for job in failures:
        if job["error_target"]:
            by_target[job["error_target"]].append(job)
        else:
            by_task[job["task_name"]][(job["exception_type"], job["error_status"])].append(job)
    totals = TaskTotals(since, now)
    problems = [*(failing_service(target, jobs, totals, span) for target, jobs in by_target.items()),
                *(failing_dependency(task, clusters, totals, span) for task, clusters in by_task.items())]
    problems = [problem for problem in problems if problem is not None]
    add_example_errors(problems)
    return problems


def failed_calls(since, now):
    """The window's failed and retried jobs whose error came from the other side, newest first:
    an indexed range of finished_at, the bugs and the breakers' jobs filtered out."""
    from_a_service = ~Q(error_target="") | Q(error_status__isnull=False) | ~Q(error_kind="")
    return (
        JobExecution.objects.filter(from_a_service, finished_at__gt=since, finished_at__lte=now,
                                    state__in=("failed", "retried"), circuit="")
        .order_by("-finished_at", "-id")
        .values_list(*COLUMNS)[:FAILURES_READ]
    )


class TaskTotals:
    """The finished and retried jobs of some tasks in the window: asked only for the tasks of a
    cluster large enough to report, each task read once."""

    def __init__(self, since, now):
        self.since, self.now, self.counts = since, now, {}

    def __call__(self, tasks):
        wanted = [task for task in tasks if task not in self.counts]
        if wanted:
            rows = (JobExecution.objects.filter(finished_at__gt=self.since, finished_at__lte=self.now,
                                                task_name__in=wanted, state__in=("succeeded", "failed", "retried"))
                    .values_list("task_name").annotate(jobs=Count("id")))
            self.counts.update(dict.fromkeys(wanted, 0))
            self.counts.update(dict(rows))
        return sum(self.counts[task] for task in tasks)


def failing_service(target, jobs, totals, span):
    tasks = Counter(job["task_name"] for job in jobs)
    lead_task = tasks.most_common(1)[0][0]
    if len(jobs) < threshold("SERVICE_FAILURE_MIN_JOBS", task=lead_task):
        return None
    share = len(jobs) / max(totals(list(tasks)), len(jobs))
    retrying = sum(job["state"] == "retried" for job in jobs)
    critical = share >= threshold("SERVICE_FAILURE_SHARE", task=lead_task) or retrying
    reasons = reasons_of(jobs)
    title = f"Service {target} is failing: {len(jobs)} jobs of {tasks_phrase(tasks)} {outcome(jobs)} ({reasons})"
    explanation = (
        f"{len(jobs)} jobs calling {target} {outcome(jobs)} in the last {span / 60:g} min ({reasons}), "
        f"{share:.0%} of those tasks' jobs, and nothing stops the workers from calling it: each job spends a worker "
        "slot, and its retries, on a service that is down. Check the service (is it up, reachable, answering, its "
        "credentials and quota). Wrap its calls in a circuit breaker (monitors.circuits.circuit) so that workers "
        "stop calling it after a few failures, and its jobs wait for it instead of failing."
    )
    return Problem(
        kind="service_failing", subject=target, severity="critical" if critical else "warning",
        title=title, explanation=explanation, evidence=evidence_of(jobs, span, target=target, share=share),
        count=len(jobs),
        fix=f"Check {target}; wrap its calls in a circuit breaker so workers stop calling it while it is down.",
        keys=[f"service:{target}"], links=links_of(jobs),
    )


def failing_dependency(task, clusters, totals, span):
    """A task whose jobs fail with one service error that names no address: when they are most
    of the task's jobs, what it depends on is down."""
    min_jobs = threshold("SERVICE_FAILURE_MIN_JOBS", task=task)
    large = {key: jobs for key, jobs in clusters.items() if len(jobs) >= min_jobs}
    if not large:
        return None
    total = max(totals([task]), 1)
    failing = [jobs for jobs in large.values() if len(jobs) / total >= threshold("SERVICE_FAILURE_SHARE", task=task)]
    if not failing:
        return None
    jobs = sorted((job for cluster in failing for job in cluster), key=lambda job: (job["finished_at"], job["id"]),
                  reverse=True)
    share = len(jobs) / max(total, len(jobs))
    errors = ", ".join(f"{short_type(cluster[0]['exception_type'])}{status_words(cluster[0])} ×{len(cluster)}"
                       for cluster in failing)  # "HTTPError 503 ×30"
    explanation = (
        f"{len(jobs)} of {task}'s {total} jobs in the last {span / 60:g} min {outcome(jobs)} with {errors}: an error "
        "that says the other side failed, but names no address. The service this task calls is down or refusing "
        "it. Check it; wrap the call in a circuit breaker (monitors.circuits.circuit) so that workers stop calling "
        "it after a few failures, and the jobs wait for it instead of failing."
    )
    return Problem(
        kind="service_failing", subject=f"dependency of {task}", severity="critical",
        title=f"A dependency of {task} is failing ({errors})", explanation=explanation,
        evidence=evidence_of(jobs, span, target="", share=share), count=len(jobs),
        fix=(f"Check the service {task} calls; wrap the call in a circuit breaker so workers stop calling it while "
             "it is down."),
        keys=[f"task:{task}"], links=links_of(jobs),
    )


def evidence_of(jobs, span, target, share):
    """`jobs` newest first. The example error is added afterwards (add_example_errors)."""
    kinds = Counter(job["error_kind"] for job in jobs if job["error_kind"])
    return {
        "target": target,
        "jobs": len(jobs),
        "share_of_jobs": round(share, 4),
        "statuses": {str(status): count for status, count in
                     Counter(job["error_status"] for job in jobs if job["error_status"] is not None).most_common(10)},
        "kind": kinds.most_common(1)[0][0] if kinds else "",
        "exception_types": dict(Counter(job["exception_type"] for job in jobs).most_common(10)),
        "outcomes": dict(Counter(job["state"] for job in jobs).most_common()),
        "tasks": dict(Counter(job["task_name"] for job in jobs).most_common(10)),
        "queues": dict(Counter(job["queue"] for job in jobs if job["queue"]).most_common(10)),
        "first_failure": min(job["finished_at"] for job in jobs).isoformat(),
        "last_failure": jobs[0]["finished_at"].isoformat(),
        "window_seconds": span,
        "sample_job_ids": [job["task_id"] for job in jobs[:SAMPLE_JOBS]],
    }


def add_example_errors(problems):
    """Each finding's newest error message, read in one query: messages can be long, so the
    window's query leaves them out."""
    newest = [problem.evidence["sample_job_ids"][0] for problem in problems]
    messages = dict(JobExecution.objects.filter(task_id__in=newest).values_list("task_id", "exception_message"))
    for problem, task_id in zip(problems, newest, strict=True):
        problem.evidence["example_error"] = short(messages.get(task_id, ""), 500)


def links_of(jobs):
    tasks = Counter(job["task_name"] for job in jobs)
    queues = Counter(job["queue"] for job in jobs if job["queue"])
    return [*(f"task:{task}" for task, _ in tasks.most_common(20)),
            *(f"queue:{queue}" for queue, _ in queues.most_common(20))]


def reasons_of(jobs):
    """"HTTP 503 ×30, connection failed ×2": what the service answered, or how calling it failed."""
    reasons = Counter(reason_of(job) for job in jobs)
    return ", ".join(f"{reason} ×{count}" for reason, count in reasons.most_common(3))


def reason_of(job):
    if job["error_status"] is not None:
        return f"{'HTTP' if job['error_kind'] == 'http' else 'status'} {job['error_status']}"
    return KIND_WORDS.get(job["error_kind"], short_type(job["exception_type"]) or "error")


def status_words(job):
    return f" {job['error_status']}" if job["error_status"] is not None else ""


def outcome(jobs):
    states = {job["state"] for job in jobs}
    return "failed" if states == {"failed"} else "retried" if states == {"retried"} else "failed or retried"


def tasks_phrase(tasks):
    names = [task for task, _ in tasks.most_common()]
    if len(names) == 1:
        return names[0]
    if len(names) == 2:
        return f"{names[0]} and {names[1]}"
    return f"{names[0]} and {len(names) - 1} other tasks"


def short_type(exception_type):
    return (exception_type or "").rsplit(".", 1)[-1]
