"""Backlog: queues too long for too long, jobs waiting too long, queues growing or with nobody
consuming them, jobs stuck on a worker that is gone, and tasks failing too often.

A queue an operator paused is reported as paused — info, a warning once paused longer than
QUEUE_PAUSED_WARNING_SECONDS — and not as "no consumer", growing or too long: its jobs wait on
purpose.

Queue rules read QueueSample (written every ~15 s by the sampler), never the broker; the job
rules read windows of the execution table through its indexes.
"""

from datetime import timedelta

from django.db.models import Count, Q

from monitors.conf import setting
from monitors.detectors.base import Problem, threshold
from monitors.models import JobExecution, QueuePause, QueueSample
from monitors.queues import time_to_drain

NAME = "backlog"


def detect(now):
    return [*queue_problems(now), *stuck_jobs(now), *failure_rates(now)]


def samples_by_queue(now, span):
    samples = QueueSample.objects.filter(resolution=0, sampled_at__gt=now - span, sampled_at__lte=now).order_by("sampled_at")
    by_queue = {}
    for sample in samples:
        by_queue.setdefault(sample.queue, []).append(sample)
    return by_queue


def queue_problems(now):
    longest = max(threshold("QUEUE_LENGTH_SECONDS"), threshold("GROWTH_SECONDS"), 60)
    problems = []
    paused = {pause.queue: pause for pause in QueuePause.objects.all()}
    latest_of = {}
    for queue, samples in samples_by_queue(now, timedelta(seconds=longest * 1.1)).items():
        latest = latest_of[queue] = samples[-1]
        if queue in paused:
            continue
        if latest.sampled_at < now - timedelta(minutes=5) or latest.error:
            continue  # no fresh sample: the monitor itself is stale (reported by the alerting)
        problems += [
            problem for problem in (
                too_long(queue, samples, now),
                too_old(queue, latest),
                growing(queue, samples, now),
                no_consumer(queue, latest),
            ) if problem is not None
        ]
    return problems + [paused_queue(pause, latest_of.get(pause.queue), now) for pause in paused.values()]


def paused_queue(pause, latest, now):
    queue, waited = pause.queue, (now - pause.paused_at).total_seconds()
    long_paused = waited >= threshold("QUEUE_PAUSED_WARNING_SECONDS", queue=queue)
    depth = latest.depth if latest is not None else None
    evidence = {"queue": queue, "paused_by": pause.paused_by, "paused_at": pause.paused_at.isoformat(),
                "reason": pause.reason, "paused_seconds": round(waited), "depth": depth}
    minutes = max(round(waited / 60), 1)
    return Problem(
        kind="queue_paused",
        subject=queue,
        severity="warning" if long_paused else "info",
        title=f"{queue} is paused ({pause.paused_by or 'someone'}, {minutes} min)"
              + (f"; {depth} jobs wait" if depth else ""),
        explanation=(
            f"{pause.paused_by or 'An operator'} paused {queue}"
            + (f" ({pause.reason})" if pause.reason else "")
            + ": no worker takes its jobs, which wait in it. Resume it on its page once the cause is dealt with."
        ),
        evidence=evidence,
        count=depth or 0,
        fix=f"Resume {queue} (its queue page, the admin, or manage.py jobwatch_queues --resume {queue}).",
        keys=[f"queue:{queue}"],
        links=waiting_tasks(queue),
    )


def covering(samples, now, seconds):
    """The samples of the last `seconds`, or None when the history does not reach back that far
    (sampling started recently): "for 20 minutes" needs 20 minutes of samples."""
    start = now - timedelta(seconds=seconds)
    slack = timedelta(seconds=2 * setting("SAMPLE_INTERVAL"))
    if not samples or samples[0].sampled_at > start + slack:
        return None
    return [sample for sample in samples if sample.sampled_at >= start]


def too_long(queue, samples, now):
    limit, seconds = threshold("QUEUE_LENGTH", queue=queue), threshold("QUEUE_LENGTH_SECONDS", queue=queue)
    recent = covering(samples, now, seconds)
    if not recent or any(sample.depth is None or sample.depth <= limit for sample in recent):
        return None
    latest = recent[-1]
    return Problem(
        kind="queue_too_long",
        subject=queue,
        severity="warning",
        title=f"Queue {queue} has held more than {limit} jobs for {seconds // 60} minutes ({latest.depth} now)",
        explanation=(
            "Jobs arrive faster than the workers finish them, or the workers are stuck or too few. Check "
            "the drain rate and the workers consuming this queue; add workers, or find what floods it."
        ),
        evidence=queue_evidence(latest) | {"smallest_depth_in_period": min(s.depth for s in recent)},
        count=latest.depth,
        fix=f"Add workers for {queue}, or find what floods it.",
        keys=[f"queue:{queue}"],
        links=waiting_tasks(queue),
    )


def too_old(queue, latest):
    age = latest.oldest_age
    if age is None:
        return None
    critical, warning = threshold("OLDEST_AGE_CRITICAL", queue=queue), threshold("OLDEST_AGE_WARNING", queue=queue)
    if age <= warning:
        return None
    severity = "critical" if age > critical else "warning"
    return Problem(
        kind="queue_oldest_age",
        subject=queue,
        severity=severity,
        title=f"The oldest job in {queue} has waited {age / 60:.1f} minutes",
        explanation=(
            f"A job has been waiting longer than {warning if severity == 'warning' else critical} s. Users are "
            "waiting for whatever it does. Check that workers consume the queue and keep up with it."
        ),
        evidence=queue_evidence(latest),
        count=latest.depth or 0,
        fix=f"Check that workers consume {queue} and keep up with it.",
        keys=[f"queue:{queue}"],
        links=waiting_tasks(queue),
    )


def growing(queue, samples, now):
    seconds = threshold("GROWTH_SECONDS", queue=queue)
    recent = covering(samples, now, seconds)
    if not recent or len(recent) < 3:
        return None
    rates_known = [s for s in recent if s.arrivals_per_minute is not None and s.drains_per_minute is not None]
    if len(rates_known) < len(recent) or any(s.arrivals_per_minute <= s.drains_per_minute for s in recent):
        return None
    first, latest = recent[0], recent[-1]
    if (latest.depth or 0) <= (first.depth or 0):
        return None
    return Problem(
        kind="queue_growing",
        subject=queue,
        severity="warning",
        title=f"Queue {queue} has been growing for {seconds // 60} minutes ({first.depth} → {latest.depth})",
        explanation=(
            "More jobs arrive than finish, steadily: at these rates the queue never drains. Add workers or "
            "find the source of the extra jobs (see the fan-out findings)."
        ),
        evidence=queue_evidence(latest) | {"depth_at_start": first.depth},
        count=latest.depth or 0,
        fix=f"Add workers for {queue}, or find the source of the extra jobs.",
        keys=[f"queue:{queue}"],
        links=waiting_tasks(queue),
    )


def no_consumer(queue, latest):
    if not latest.depth or latest.consumers != 0:
        return None  # empty, or the broker cannot tell (None)
    return Problem(
        kind="queue_without_consumer",
        subject=queue,
        severity="critical",
        title=f"Nobody consumes {queue}, and {latest.depth} jobs wait in it",
        explanation=(
            "No worker listens to this queue, so its jobs will never run. Start a worker with -Q "
            f"{queue}, or route the tasks elsewhere and move or purge what is queued."
        ),
        evidence=queue_evidence(latest),
        count=latest.depth,
        fix=f"Start a worker with -Q {queue}, or route its tasks to a queue that is consumed.",
        keys=[f"queue:{queue}"],
        links=waiting_tasks(queue),
    )


def waiting_tasks(queue):
    """The tasks whose jobs are recorded as waiting in the queue (the partial index of waiting
    jobs): a finding about one of them (duplicates, say) is part of the queue's problem."""
    waiting = JobExecution.objects.filter(state="enqueued", queue=queue).values_list("task_name").annotate(n=Count("id"))
    return [f"task:{task}" for task, _ in waiting.order_by("-n")[:10]]


def queue_evidence(sample):
    return {
        "queue": sample.queue,
        "depth": sample.depth,
        "in_flight": sample.in_flight,
        "consumers": sample.consumers,
        "oldest_age_seconds": sample.oldest_age,
        "arrivals_per_minute": sample.arrivals_per_minute,
        "drains_per_minute": sample.drains_per_minute,
        "time_to_drain_seconds": time_to_drain(sample.depth, sample.arrivals_per_minute, sample.drains_per_minute),
        "sampled_at": sample.sampled_at.isoformat(),
    }


def live_workers(now):
    """Worker hostnames seen consuming in the last few minutes of samples; None if unknown."""
    seen = QueueSample.objects.filter(sampled_at__gt=now - timedelta(minutes=3)).filter(workers__isnull=False).values_list("workers", flat=True)
    hosts = set()
    any_known = False
    for workers in seen:
        any_known = True
        hosts.update(workers or ())
    return hosts if any_known else None


def stuck_jobs(now):
    after = timedelta(seconds=threshold("STUCK_AFTER_SECONDS"))
    stuck = JobExecution.objects.filter(state="started", started_at__lt=now - after)
    by_task = stuck.values("task_name").annotate(jobs=Count("id"))
    alive = live_workers(now)
    problems = []
    for row in by_task:
        task = row["task_name"]
        jobs = list(stuck.filter(task_name=task).order_by("started_at").values("task_id", "worker", "started_at")[:200])
        gone = sorted({job["worker"] for job in jobs if alive is not None and job["worker"] not in alive})
        problems.append(Problem(
            kind="stuck_jobs",
            subject=task,
            severity="critical" if gone else "warning",
            title=f"{row['jobs']} {task} job{'s' if row['jobs'] != 1 else ''} started over {after.total_seconds() / 60:.0f} minutes ago"
                  + (f" on workers that are gone ({', '.join(gone)})" if gone else ""),
            explanation=(
                "These jobs started long ago and never finished. If their worker is gone (crashed, killed, "
                "scaled down) they are lost unless acks_late re-delivers them; otherwise they hang (add a time "
                "limit). Replay them if they should run again."
            ),
            evidence={
                "jobs": row["jobs"],
                "workers_gone": gone,
                "workers_known": alive is not None,
                "oldest_started_at": jobs[0]["started_at"].isoformat() if jobs else None,
                "job_ids": [job["task_id"] for job in jobs],
            },
            count=row["jobs"],
            fix="Replay them if they should run again; give the task a time limit if it hangs.",
            keys=[f"task:{task}"],
            links=[f"worker:{worker}" for worker in gone],
        ))
    return problems


def failure_rates(now):
    window = timedelta(seconds=threshold("FAILURE_RATE_SECONDS"))
    finished = (
        JobExecution.objects.filter(finished_at__gt=now - window, finished_at__lte=now, state__in=("succeeded", "failed"))
        .values("task_name")
        .annotate(total=Count("id"), failed=Count("id", filter=Q(state="failed")))
    )
    problems = []
    for row in finished:
        task = row["task_name"]
        if row["total"] < threshold("FAILURE_RATE_MIN_JOBS", task=task) or not row["failed"]:
            continue
        rate = row["failed"] / row["total"]
        if rate <= threshold("FAILURE_RATE", task=task):
            continue
        failed = JobExecution.objects.filter(finished_at__gt=now - window, finished_at__lte=now, state="failed", task_name=task)
        errors = list(failed.values("exception_type").annotate(jobs=Count("id")).order_by("-jobs")[:5])
        # The services the failures came from (read from the exceptions by the recorder): a task
        # failing because a service is down is evidence of that outage.
        targets = list(failed.exclude(error_target="").values_list("error_target").annotate(jobs=Count("id")).order_by("-jobs")[:5])
        problems.append(Problem(
            kind="failure_rate",
            subject=task,
            severity="critical" if rate >= threshold("FAILURE_RATE_CRITICAL", task=task) else "warning",
            title=f"{task} fails {rate:.0%} of the time ({row['failed']} of {row['total']} in {window.total_seconds() / 60:.0f} min)",
            explanation=(
                "This task fails more than usual. The commonest errors are listed; see the failures page for "
                "tracebacks, and the circuit and orphan findings for an external service down or missing records."
            ),
            evidence={"failed": row["failed"], "finished": row["total"], "rate": round(rate, 4),
                      "errors": {error["exception_type"] or "?": error["jobs"] for error in errors},
                      "services": dict(targets)},
            count=row["failed"],
            fix=f"Read the commonest error's traceback on the failures page; replay {task}'s failures once it is fixed.",
            keys=[f"task:{task}"],
            links=[f"service:{target}" for target, _ in targets],
        ))
    return problems
