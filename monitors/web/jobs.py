"""The jobs list: what ran, what it was called with, and what enqueued it (a job's own page is
job_page.py).

The list filters with the same words as replay (monitors/actions/selection.py), pages by keyset (the
cost of page 10,000 is the cost of page 1), and counts only as far as it can afford
(monitors/web/counting.py), in a fragment of its own so the list never waits for the count."""

import time

from django.db import DatabaseError

from monitors.models import JobExecution, JobState, OriginKind
from monitors.actions.selection import FILTER_KEYS, BadSelection, clean, filtered, pinned, text_indexed
from monitors.web.access import staff_only
from monitors.web.counting import bounded_count, with_timeout
from monitors.web.params import BadParameter, Flag, Id, Text, query
from monitors.web.respond import htmx_target, is_api, respond

PAGE_SIZE = 50
LIST_TIMEOUT_MS = 3000
# What a whole page of 50 rows takes to render beyond its JSON (benchmarks/dashboard.py, full page
# against API): a page that counts as well leaves that much of the count's budget for it.
PAGE_RENDER_MS = 10
LIST_COLUMNS = ["id", "task_id", "task_name", "state", "queue", "enqueued_at", "started_at", "finished_at", "runtime",
                "retries", "circuit", "worker", "exception_type", "origin_kind", "origin_model", "origin_pk",
                "origin_update_fields", "origin_receiver", "origin_in_atomic", "origin_deferred", "replay_of", "discarded_at"]


@staff_only
@query(before=Id(), count=Flag(), **{key: Text() for key in FILTER_KEYS})
def job_list(request):
    started = time.perf_counter()
    applied = {key: request.query[key] for key in FILTER_KEYS if request.query[key]}
    jobs, notes, error, replay_filter, bad = JobExecution.objects.none(), [], "", {}, False
    try:
        applied = clean(applied)
        # The list shows, and "Replay every job matching this filter" acts on, the same jobs: the
        # filter pinned to now (ages as times, up to the newest job id), previewed before it runs.
        replay_filter = pinned(applied) if applied else {}
        jobs, notes = filtered(replay_filter)
    except BadSelection as problem:
        if is_api(request):
            raise BadParameter(problem.key or "filter", str(problem)) from problem
        error, bad = str(problem), True
    before = request.query["before"]
    page_jobs = jobs.order_by("-id")
    if before:
        page_jobs = page_jobs.filter(id__lt=before)
    page, next_before = [], None
    count_only = htmx_target(request) == "job-count"  # the page's own count fragment shows no rows
    if not error and not count_only:
        try:
            # Rows as dicts: the template reads ~25 values a row, and a dict answers the template
            # engine's first try (a key) where a model instance answers only its second (an
            # attribute, after a caught TypeError): a quarter of the list's rendering time.
            page = with_timeout(page_jobs.values(*LIST_COLUMNS)[: PAGE_SIZE + 1], LIST_TIMEOUT_MS)
        except DatabaseError:
            error = ("This filter found too few jobs among the newest ones to fill a page in time. "
                     "Add a time range (since / until) or a task or queue to narrow it.")
    if len(page) > PAGE_SIZE:
        page = page[:PAGE_SIZE]
        next_before = page[-1]["id"]
    context = {
        "jobs": page, "applied": applied, "notes": notes, "error": error, "next_before": next_before,
        "before": before or "", "filter_help": FILTER_KEYS, "replay_filter": replay_filter,
        "states": JobState.choices, "origin_kinds": OriginKind.choices,
    }
    # The count only when asked (the page's own fragment asks, after the list is shown; the API
    # with ?count=1): it is the one part of this answer whose cost grows with the history.
    if count_only or request.query["count"]:
        # Text in arguments and errors without a trigram index to find it (text_indexed): counting it
        # exactly would read every job in the searched range again, so its count is the planner's
        # estimate, and says so. With one, it is counted like any other filter.
        unindexed_text = "text" in applied and not text_indexed(applied["text"], jobs.db)
        # Listed and counted in one answer: the count gets what the list left of the budget, and
        # on a whole page what rendering its rows will need too.
        spent_ms = 0 if count_only else (time.perf_counter() - started) * 1000 + (0 if is_api(request) else PAGE_RENDER_MS)
        context["count"] = None if error else bounded_count(jobs, filtered=bool(applied), estimate_only=unindexed_text, spent_ms=spent_ms,
                                                            estimate="text" not in applied)
    return respond(request, "jobwatch/jobs.html", context, fragments=["job-rows", "job-count"],
                   api=["jobs", "count", "applied", "notes", "error", "next_before"], status=400 if bad else 200)
