"""Fan-out: which saves set off the most jobs. Top origins (model and receiver) by enqueues and
enqueues per save over a window, their timeline, the saves that enqueued the most and the
fields those saves touched, beside the fan-out detectors' open findings.

Windowed through the enqueued_at index: the cost follows the jobs in the window shown."""

from django.db import DatabaseError
from django.db.models import Count

from monitors.models import Finding, JobExecution
from monitors.web import charts
from monitors.web.access import staff_only
from monitors.web.counting import shared_timeout
from monitors.web.respond import respond
from monitors.web.params import query
from monitors.web.windows import WINDOWS, Bucket, bucket_of, bucket_times, window_from, window_param

TOP = 20
TIMELINE_ORIGINS = 6
# What the page's reads of its window may take together (every open page polls every 15 s):
# on the 10 M benchmark history a day's window took 1.7 s and a week's 9 s. A window that holds
# more jobs than this reads is refused with a word, rather than holding a connection that long.
READ_BUDGET_MS = 3000
FANOUT_KINDS = ("fanout_storm", "trivial_save_enqueues", "duplicate_enqueues", "bulk_loop")


@staff_only
@query(window=window_param("15m"))
def fanout(request):
    # Storms are minutes long (the detector looks at 5): the page opens on the last 15 minutes,
    # and a longer window costs in proportion to the jobs it holds.
    window = window_from(request)
    try:
        counted = count_origins(window)
        too_many = ""
    except DatabaseError as error:
        if not cancelled(error):
            raise
        counted = {"models": [], "origins": [], "saves": [], "chart": timeline(JobExecution.objects.none(), window, [])}
        too_many = (f"The jobs of the last {window.label} are too many to count within {READ_BUDGET_MS / 1000:g} s; "
                    "choose a shorter window.")
    context = {
        "window": window, "windows": WINDOWS, **counted, "too_many": too_many,
        "findings": list(Finding.objects.filter(status=Finding.Status.OPEN, kind__in=FANOUT_KINDS).order_by("-last_seen")[:20]),
    }
    return respond(request, "jobwatch/fanout.html", context, fragments=["fanout-tables"],
                   api=["window", "models", "origins", "saves", "findings", "too_many"])


def count_origins(window):
    """The page's tables and chart over the window, read within READ_BUDGET_MS in all (PostgreSQL)."""
    recent = JobExecution.objects.filter(enqueued_at__gte=window.since).exclude(origin_receiver="")
    with shared_timeout(recent.db, READ_BUDGET_MS) as next_read:
        # Ties are ranked by name, so that a table does not reorder itself on every refresh.
        origins = list(recent.filter(origin_kind__in=("save", "delete", "signal"))
                       .values("origin_model", "origin_receiver")
                       .annotate(jobs=Count("id"), saves=Count("origin_save", distinct=True), tasks=Count("task_name", distinct=True))
                       .order_by("-jobs", "origin_model", "origin_receiver")[:TOP])
        next_read()
        models = list(recent.filter(origin_kind__in=("save", "delete")).exclude(origin_save="")
                      .values("origin_model")
                      .annotate(jobs=Count("id"), saves=Count("origin_save", distinct=True), receivers=Count("origin_receiver", distinct=True))
                      .order_by("-jobs", "origin_model")[:TOP])
        next_read()
        saves = list(recent.exclude(origin_save="")
                     .values("origin_save", "origin_model", "origin_pk", "origin_created", "origin_update_fields")
                     .annotate(jobs=Count("id"), receivers=Count("origin_receiver", distinct=True))
                     .filter(jobs__gt=1).order_by("-jobs", "origin_model", "origin_save")[:TOP])
        next_read()
        chart = timeline(recent, window, origins[:TIMELINE_ORIGINS])
    for model in models:
        model["per_save"] = round(model["jobs"] / model["saves"], 1) if model["saves"] else None
    for origin in origins:
        origin["per_save"] = round(origin["jobs"] / origin["saves"], 1) if origin["saves"] else None
        origin["per_minute"] = round(origin["jobs"] * 60 / window.span.total_seconds(), 1)
    return {"models": models, "origins": origins, "saves": saves, "chart": chart}


def cancelled(error):
    """Whether PostgreSQL cancelled the statement for its timeout (SQLSTATE 57014), rather than
    failed: a database that is down is the site's error page, not "choose a shorter window"."""
    return getattr(error.__cause__, "sqlstate", None) == "57014"


def timeline(recent, window, origins):
    times = bucket_times(window)
    position_of = bucket_of(times, window)
    wanted = {(origin["origin_model"], origin["origin_receiver"]) for origin in origins}
    series = {key: [0] * len(times) for key in wanted}
    rows = (recent.filter(origin_receiver__in={receiver for _, receiver in wanted})
            .annotate(bucket=Bucket("enqueued_at", window.bucket))
            .values("origin_model", "origin_receiver", "bucket").annotate(jobs=Count("id")).order_by())
    for row in rows:
        key = (row["origin_model"], row["origin_receiver"])
        position = position_of(row["bucket"])
        if key in series and position is not None:
            series[key][position] += row["jobs"]
    lines = [(f"{model or '?'} → {receiver.rsplit('.', 1)[-1]}", times, counts)
             for (model, receiver), counts in sorted(series.items(), key=lambda item: -sum(item[1]))]
    return charts.line_chart(lines, title=f"Jobs enqueued per {window.bucket // 60} min, by origin", window=window)
