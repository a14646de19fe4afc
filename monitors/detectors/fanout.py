"""Callback fan-out: one save setting off many receivers, each enqueuing jobs.

Every query reads only the jobs enqueued within the window (and the baseline before it), through
the enqueued_at index, so its cost follows the window, not the history.
"""

from collections import Counter
from datetime import timedelta

from django.db.models import Count, Max, Min, Q
from django.db.models.functions import TruncSecond

from monitors.detectors.base import Problem, threshold
from monitors.models import JobExecution

NAME = "fanout"


def detect(now):
    window = timedelta(seconds=threshold("FANOUT_WINDOW_SECONDS"))
    recent = JobExecution.objects.filter(enqueued_at__gt=now - window, enqueued_at__lte=now)
    return [
        *storms(recent, now, window),
        *trivial_saves(recent, window),
        *duplicates(now),
        *bulk_loops(recent, window),
    ]


def per_minute(count, span):
    return count / (span.total_seconds() / 60)


def storms(recent, now, window):
    """Models whose saves enqueue far above their own baseline, above an absolute ceiling, or in
    a burst: one save sets off every receiver, so a storm is one model's saves, whatever number of
    receivers carry it."""
    baseline_span = timedelta(seconds=threshold("FANOUT_BASELINE_SECONDS"))
    from_saves = recent.exclude(origin_receiver="").filter(origin_kind__in=("save", "delete", "signal"))
    by_model = from_saves.values("origin_model").annotate(jobs=Count("id"), saves=Count("origin_save", distinct=True))
    problems = []
    for origin in by_model:
        model = origin["origin_model"]
        rate = per_minute(origin["jobs"], window)
        baseline, before = baseline_rate(model, now, window, baseline_span)
        factor = threshold("FANOUT_STORM_FACTOR")
        over_ceiling = rate >= threshold("FANOUT_CEILING_PER_MINUTE")
        # An origin with no history yet has no baseline to jump from: only the ceiling and the
        # burst rule apply.
        jumped = before > 0 and rate >= threshold("FANOUT_STORM_MIN_PER_MINUTE") and rate >= factor * max(baseline, 1.0)
        burst = peak_burst(from_saves.filter(origin_model=model), baseline / 60, factor)
        if not (over_ceiling or jumped or burst):
            continue
        problems.append(storm_problem(from_saves.filter(origin_model=model), origin, rate, baseline, burst, window,
                                      "faster than the ceiling" if over_ceiling else
                                      f"{rate / max(baseline, 1.0):.0f}x faster than usual" if jumped else
                                      f"in a burst of {burst['per_second']:.0f} a second"))
    return problems


def storm_problem(jobs, origin, rate, baseline, burst, window, how):
    model = origin["origin_model"] or "(no model)"
    saves = origin["saves"] or 0
    receivers = dict(jobs.values_list("origin_receiver").annotate(n=Count("id")).order_by("-n")[:20])
    tasks = dict(jobs.values_list("task_name").annotate(n=Count("id")).order_by("-n")[:20])
    queues = dict(jobs.values_list("queue").annotate(n=Count("id")).order_by("-n")[:20])
    headline = f"{burst['per_second']:.0f}/s for {burst['seconds']} s" if burst else f"{rate:.0f}/min (baseline {baseline:.0f}/min)"
    names = ", ".join(receivers)
    return Problem(
        kind="fanout_storm",
        subject=model,
        severity="warning",
        title=f"Enqueue storm from {model} saves: {headline}, {len(receivers)} receiver{'s' if len(receivers) != 1 else ''}",
        explanation=(
            f"Every {model} save sets off {names}, each enqueuing a job, and saves are coming {how}. "
            "Usual fixes: enqueue only when a field the job needs changed (check update_fields or compare old "
            "and new values), debounce or coalesce the job (one per record per minute), or move the work out "
            "of the save path."
        ),
        evidence={
            "enqueues_per_minute": round(rate, 1),
            "baseline_per_minute": round(baseline, 1),
            "peak_per_second": burst["per_second"] if burst else None,
            "peak_at": burst["at"] if burst else None,
            "enqueues": origin["jobs"],
            "saves": saves,
            "enqueues_per_save": round(origin["jobs"] / saves, 2) if saves else None,
            "receivers": receivers,
            "tasks": tasks,
            "queues": queues,
            "model": model,
            "window_seconds": int(window.total_seconds()),
            "sample_job_ids": sample_ids(jobs),
        },
        count=origin["jobs"],
        fix=f"Enqueue from {model} saves only when a field the job needs changed, or coalesce the jobs.",
        keys=[f"saves:{model}", *(f"receiver:{receiver}" for receiver in receivers)],
        links=[*(f"task:{task}" for task in tasks), *(f"queue:{queue}" for queue in queues if queue)],
    )


def peak_burst(jobs, baseline_per_second, factor):
    """The busiest FANOUT_BURST_SECONDS of the window, when it is a burst: at least
    FANOUT_BURST_PER_SECOND, and `factor` times the origin's rate before. Counted per second in
    the database (a window holds at most a few hundred seconds)."""
    span = int(threshold("FANOUT_BURST_SECONDS"))
    per_second = dict(jobs.annotate(second=TruncSecond("enqueued_at")).values_list("second").annotate(n=Count("id")).order_by())
    if not per_second:
        return None
    seconds = sorted(per_second)
    best, best_at, total, tail = 0, None, 0, 0
    for moment in seconds:
        total += per_second[moment]
        while (moment - seconds[tail]).total_seconds() >= span:
            total -= per_second[seconds[tail]]
            tail += 1
        if total > best:
            best, best_at = total, seconds[tail]
    rate = best / span
    if rate < threshold("FANOUT_BURST_PER_SECOND") or rate < factor * baseline_per_second:
        return None
    return {"per_second": round(rate, 1), "seconds": span, "at": best_at.isoformat(), "enqueues": best}


def baseline_rate(model, now, window, baseline_span):
    """(enqueues per minute, enqueues) of the model's saves before the window. The rate is over
    the time they have been active within the baseline span, so a workload that started ten
    minutes ago is compared with those ten minutes, not with fifty empty ones; with less than one
    window of history there is no baseline yet, and only the ceiling and the burst rule apply."""
    start = now - window
    before = JobExecution.objects.filter(
        enqueued_at__gt=start - baseline_span, enqueued_at__lte=start, origin_model=model,
        origin_kind__in=("save", "delete", "signal"),
    ).exclude(origin_receiver="").aggregate(jobs=Count("id"), first=Min("enqueued_at"))
    if not before["jobs"] or start - before["first"] < window:
        return 0.0, 0  # less than a window of history is no baseline yet (a fresh start)
    active = start - before["first"]
    return per_minute(before["jobs"], min(active, baseline_span)), before["jobs"]


def trivial_saves(recent, window):
    """Saves whose update_fields touch only fields no job cares about, that still enqueue: one
    finding per model, with every receiver that does it (one save fires them all)."""
    trivial = set(threshold("TRIVIAL_FIELDS"))
    saves = (
        recent.filter(origin_kind="save", origin_created=False)
        .filter(origin_update_fields__isnull=False)
        .values("origin_model", "origin_receiver", "origin_update_fields")
        .annotate(jobs=Count("id"))
    )
    totals = dict(recent.filter(origin_kind="save").values_list("origin_model").annotate(jobs=Count("id")).order_by())
    found = {}
    for row in saves:
        fields = row["origin_update_fields"] or []
        if not fields or not set(fields) <= trivial:
            continue
        entry = found.setdefault(row["origin_model"], {"jobs": 0, "fields": set(), "receivers": Counter()})
        entry["jobs"] += row["jobs"]
        entry["fields"].update(fields)
        entry["receivers"][row["origin_receiver"]] += row["jobs"]
    problems = []
    for model, entry in found.items():
        if entry["jobs"] < threshold("TRIVIAL_SAVE_MIN_JOBS"):
            continue
        share = entry["jobs"] / max(totals.get(model, entry["jobs"]), 1)
        fields, receivers = sorted(entry["fields"]), dict(entry["receivers"].most_common())
        names = ", ".join(receiver.rsplit(".", 1)[-1] for receiver in receivers)
        problems.append(Problem(
            kind="trivial_save_enqueues",
            subject=model,
            severity="info",
            title=f"{model} saves that only touch {', '.join(fields)} still enqueue {entry['jobs']} jobs "
                  f"({len(receivers)} receiver{'s' if len(receivers) != 1 else ''})",
            explanation=(
                f"{entry['jobs']} jobs ({share:.0%} of those {model} saves enqueued) came from saves that changed only "
                f"{', '.join(fields)}, through {names}. No job needs to run for that. Usual fix: in each receiver, "
                f"return early when update_fields is a subset of {{{', '.join(fields)}}}."
            ),
            evidence={
                "jobs": entry["jobs"],
                "share_of_save_jobs": round(share, 3),
                "fields": fields,
                "receivers": receivers,
                "model": model,
                "sample_job_ids": sample_ids(recent.filter(origin_model=model, origin_created=False, origin_kind="save")),
            },
            count=entry["jobs"],
            fix=f"In {names}, return early when update_fields is within {{{', '.join(fields)}}}.",
            keys=[f"saves:{model}", *(f"receiver:{receiver}" for receiver in receivers)],
        ))
    return problems


def duplicates(now):
    """The same task with the same arguments enqueued several times within a short window."""
    window = timedelta(seconds=threshold("DUPLICATE_WINDOW_SECONDS"))
    groups = (
        JobExecution.objects.filter(enqueued_at__gt=now - window, enqueued_at__lte=now)
        .exclude(payload_hash="")
        .exclude(origin_kind="beat")  # periodic tasks repeat the same call by design
        .values("task_name", "payload_hash")
        .annotate(copies=Count("id"), ran=Count("id", filter=Q(state="succeeded")), first=Min("enqueued_at"), last=Max("enqueued_at"))
        .filter(copies__gte=threshold("DUPLICATE_MIN_COPIES"))
        .order_by("-copies")
    )
    by_task = {}
    for group in groups:
        by_task.setdefault(group["task_name"], []).append(group)
    problems = []
    for task, task_groups in by_task.items():
        copies = sum(group["copies"] for group in task_groups)
        needless = sum(group["copies"] - 1 for group in task_groups)
        ran_needlessly = sum(max(group["ran"] - 1, 0) for group in task_groups)
        worst = task_groups[0]
        example = JobExecution.objects.filter(task_name=task, payload_hash=worst["payload_hash"]).order_by("id").first()
        problems.append(Problem(
            kind="duplicate_enqueues",
            subject=task,
            severity="info",
            title=f"{task} enqueued {needless} times more than needed (same arguments)",
            explanation=(
                f"{len(task_groups)} distinct calls of {task} were each enqueued several times within "
                f"{int(window.total_seconds())} s; {ran_needlessly} copies already ran for nothing. Usual fixes: "
                "enqueue once per change (on_commit, or only when the fields the job reads changed), or make "
                "the job a no-op when an identical one is queued (a dedupe key with a short lock)."
            ),
            evidence={
                "distinct_calls": len(task_groups),
                "enqueues": copies,
                "needless_enqueues": needless,
                "ran_needlessly": ran_needlessly,
                "worst_copies": worst["copies"],
                "example_args": example.args if example else None,
                "example_kwargs": example.kwargs if example else None,
                "origin_receiver": example.origin_receiver if example else "",
                "sample_job_ids": sample_ids(JobExecution.objects.filter(task_name=task, payload_hash=worst["payload_hash"], enqueued_at__gt=now - window)),
            },
            count=needless,
            fix=f"Enqueue {task} once per change, or skip a call identical to one already queued.",
            keys=[f"task:{task}"],
            links=[f"receiver:{example.origin_receiver}"] if example and example.origin_receiver else [],
        ))
    return problems


def bulk_loops(recent, window):
    """One transaction (or request) that saved many rows, each save enqueuing jobs."""
    minimum = threshold("BULK_LOOP_MIN_SAVES")
    loops = (
        recent.exclude(origin_transaction="").exclude(origin_save="")
        .values("origin_transaction")
        .annotate(saves=Count("origin_save", distinct=True), jobs=Count("id"))
        .filter(saves__gte=minimum)
        .order_by("-jobs")
    )
    by_origin = {}
    for loop in loops:
        origin = (
            recent.filter(origin_transaction=loop["origin_transaction"])
            .values("origin_model", "origin_request", "origin_task")
            .annotate(jobs=Count("id")).order_by("-jobs").first()
        )
        key = (origin["origin_model"], origin["origin_request"] or origin["origin_task"])
        by_origin.setdefault(key, []).append(loop)
    problems = []
    for (model, where), found in by_origin.items():
        biggest = found[0]
        receivers = sorted(set(
            recent.filter(origin_transaction=biggest["origin_transaction"]).values_list("origin_receiver", flat=True)
        ))
        per_save = biggest["jobs"] / biggest["saves"]
        problems.append(Problem(
            kind="bulk_loop",
            subject=f"{model}:{where or 'unknown caller'}",
            severity="info",
            title=f"A loop saved {biggest['saves']} {model} rows in one transaction and enqueued {biggest['jobs']} jobs",
            explanation=(
                f"{len(found)} transaction(s){f' from {where}' if where else ''} saved {biggest['saves']} or more "
                f"{model} rows one by one; each save fired the receivers ({', '.join(receivers)}), "
                f"{per_save:.1f} jobs per save. Usual fix: do the bulk change with bulk_update / update() "
                "and enqueue one batch job for the whole set afterwards."
            ),
            evidence={
                "transactions": len(found),
                "largest_saves": biggest["saves"],
                "largest_jobs": biggest["jobs"],
                "jobs_per_save": round(per_save, 2),
                "receivers": receivers,
                "model": model,
                "caller": where,
                "transaction_ids": [loop["origin_transaction"] for loop in found[:10]],
            },
            count=sum(loop["jobs"] for loop in found),
            fix=f"Change the {model} rows with bulk_update() or update(), then enqueue one job for the set.",
            keys=[f"saves:{model}"],
            links=[f"receiver:{receiver}" for receiver in receivers if receiver],
        ))
    return problems


def sample_ids(queryset, limit=10):
    return list(queryset.order_by("-id").values_list("task_id", flat=True)[:limit])
