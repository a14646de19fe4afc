"""Callback fan-out: one save setting off many receivers, each enqueuing jobs.

Every query reads only the jobs enqueued within the window (and the baseline before it), through
the enqueued_at index, so its cost follows the window, not the history.
"""

from datetime import timedelta

from django.db.models import Count, Max, Min, Q

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
    """Origins enqueuing far above their own baseline, or above an absolute ceiling."""
    baseline_span = timedelta(seconds=threshold("FANOUT_BASELINE_SECONDS"))
    by_origin = (
        recent.exclude(origin_receiver="")
        .filter(origin_kind__in=("save", "delete", "signal"))
        .values("origin_model", "origin_receiver")
        .annotate(jobs=Count("id"), saves=Count("origin_save", distinct=True), tasks=Count("task_name", distinct=True))
    )
    problems = []
    for origin in by_origin:
        rate = per_minute(origin["jobs"], window)
        if rate < threshold("FANOUT_STORM_MIN_PER_MINUTE"):
            continue
        baseline, before = baseline_rate(origin, now, window, baseline_span)
        factor = threshold("FANOUT_STORM_FACTOR")
        over_ceiling = rate >= threshold("FANOUT_CEILING_PER_MINUTE")
        # An origin with no history yet has no baseline to jump from: only the ceiling applies.
        jumped = before > 0 and rate >= factor * max(baseline, 1.0)
        if not (over_ceiling or jumped):
            continue
        model, receiver = origin["origin_model"] or "(no model)", origin["origin_receiver"]
        saves = origin["saves"] or 0
        problems.append(Problem(
            kind="fanout_storm",
            subject=f"{model}:{receiver}",
            severity="critical" if over_ceiling else "warning",
            title=f"Enqueue storm from {receiver} on {model} saves: {rate:.0f}/min (baseline {baseline:.0f}/min)",
            explanation=(
                f"The receiver {receiver} enqueues a job on every {model} save, and saves are coming "
                f"{'faster than the ceiling' if over_ceiling else f'{rate / max(baseline, 1.0):.0f}x faster than usual'}. "
                "Usual fixes: enqueue only when a field the job needs changed (check update_fields or "
                "compare old and new values), debounce or coalesce the job (one per record per minute), "
                "or move the work out of the save path."
            ),
            evidence={
                "enqueues_per_minute": round(rate, 1),
                "baseline_per_minute": round(baseline, 1),
                "enqueues": origin["jobs"],
                "saves": saves,
                "enqueues_per_save": round(origin["jobs"] / saves, 2) if saves else None,
                "receiver": receiver,
                "model": model,
                "window_seconds": int(window.total_seconds()),
                "sample_job_ids": sample_ids(recent.filter(origin_model=origin["origin_model"], origin_receiver=receiver)),
            },
            count=origin["jobs"],
        ))
    return problems


def baseline_rate(origin, now, window, baseline_span):
    """(enqueues per minute, enqueues) of the origin before the window. The rate is over the time
    the origin has been active within the baseline span (at least one window), so a workload that
    started a minute ago is compared with its own first minute, not with nine empty ones."""
    start = now - window
    before = JobExecution.objects.filter(
        enqueued_at__gt=start - baseline_span, enqueued_at__lte=start,
        origin_model=origin["origin_model"], origin_receiver=origin["origin_receiver"],
    ).aggregate(jobs=Count("id"), first=Min("enqueued_at"))
    if not before["jobs"]:
        return 0.0, 0
    active = max(start - before["first"], window)
    return per_minute(before["jobs"], min(active, baseline_span)), before["jobs"]


def trivial_saves(recent, window):
    """Saves whose update_fields touch only fields no job cares about, that still enqueue."""
    trivial = set(threshold("TRIVIAL_FIELDS"))
    saves = (
        recent.filter(origin_kind="save", origin_created=False)
        .filter(origin_update_fields__isnull=False)
        .values("origin_model", "origin_receiver", "origin_update_fields")
        .annotate(jobs=Count("id"))
    )
    totals = {
        (row["origin_model"], row["origin_receiver"]): row["jobs"]
        for row in recent.filter(origin_kind="save").values("origin_model", "origin_receiver").annotate(jobs=Count("id"))
    }
    found = {}
    for row in saves:
        fields = row["origin_update_fields"] or []
        if not fields or not set(fields) <= trivial:
            continue
        key = (row["origin_model"], row["origin_receiver"])
        entry = found.setdefault(key, {"jobs": 0, "fields": set()})
        entry["jobs"] += row["jobs"]
        entry["fields"].update(fields)
    problems = []
    for (model, receiver), entry in found.items():
        if entry["jobs"] < threshold("TRIVIAL_SAVE_MIN_JOBS"):
            continue
        share = entry["jobs"] / max(totals.get((model, receiver), entry["jobs"]), 1)
        fields = sorted(entry["fields"])
        problems.append(Problem(
            kind="trivial_save_enqueues",
            subject=f"{model}:{receiver}",
            severity="warning",
            title=f"{receiver} enqueues on saves that only touch {', '.join(fields)}",
            explanation=(
                f"{entry['jobs']} jobs ({share:.0%} of this receiver's) came from {model} saves that changed "
                f"only {', '.join(fields)}. No job needs to run for that. Usual fix: in the receiver, return early "
                f"when update_fields is a subset of {{{', '.join(fields)}}}."
            ),
            evidence={
                "jobs": entry["jobs"],
                "share_of_receiver_jobs": round(share, 3),
                "fields": fields,
                "receiver": receiver,
                "model": model,
                "sample_job_ids": sample_ids(recent.filter(origin_model=model, origin_receiver=receiver, origin_created=False)),
            },
            count=entry["jobs"],
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
            severity="warning",
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
            severity="warning",
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
        ))
    return problems


def sample_ids(queryset, limit=10):
    return list(queryset.order_by("-id").values_list("task_id", flat=True)[:limit])
