"""Fan-out: which saves set off the most jobs. Top origins (model and receiver) by enqueues and
enqueues per save over a window, their timeline, the saves that enqueued the most and the
fields those saves touched, beside the fan-out detectors' open findings.

The origins, the models and the timeline are read from the counts by origin the recorder keeps
per minute and per hour (OriginTally), so their cost follows the hours of the window, not its
jobs. The single saves
that enqueued the most can only be ranked from the job rows: that table covers the last hour at
most (a save's jobs are enqueued within moments; a storm is minutes long), read through the
enqueued_at index within a time budget."""

from dataclasses import replace
from datetime import timedelta

from django.db import DatabaseError
from django.db.models import Count, Q, Sum

from monitors.models import Finding, JobExecution, OriginTally
from monitors.recording.origin_tally import FANOUT_KINDS as ORIGIN_KINDS
from monitors.recording.origin_tally import HOUR, MINUTE
from monitors.web import charts
from monitors.web.access import staff_only
from monitors.web.counting import statement_timeout
from monitors.web.respond import respond
from monitors.web.params import query
from monitors.web.windows import WINDOWS, Bucket, bucket_of, bucket_times, window_from, window_param

TOP = 20
# The single saves are ranked over the window, or over its last hour when it is longer.
SAVES_WINDOW = WINDOWS["1h"]
TIMELINE_ORIGINS = 6
# What ranking the single saves may take (every open page polls every 15 s). It reads the jobs
# of up to an hour: ~10 ms for the 13,800 of an hour on the benchmark history, but an hour of a
# site running 1,000 jobs a second is 3.6 M jobs. One that holds more than this reads leaves that
# table out, with a word, rather than hold a connection for seconds.
READ_BUDGET_MS = 3000
FANOUT_KINDS = ("fanout_storm", "trivial_save_enqueues", "duplicate_enqueues", "bulk_loop")


@staff_only
@query(window=window_param("15m"))
def fanout(request):
    # Storms are minutes long (the detector looks at 5): the page opens on the last 15 minutes.
    window = window_from(request)
    saves_window = window if window.span <= SAVES_WINDOW.span else replace(SAVES_WINDOW, end=window.end)
    saves, too_many = top_saves(saves_window)
    context = {
        "window": window, "windows": WINDOWS, **count_origins(window), "saves": saves, "too_many": too_many,
        "saves_window": saves_window.label,
        "findings": list(Finding.objects.filter(status=Finding.Status.OPEN, kind__in=FANOUT_KINDS).order_by("-last_seen")[:20]),
    }
    return respond(request, "jobwatch/fanout.html", context, fragments=["fanout-tables"],
                   api=["window", "models", "origins", "saves", "saves_window", "findings", "too_many"])


def tallies_of(window, hours=True):
    """The window's OriginTally rows: its whole hours from the hourly rows and the minutes before
    the first of them from the minute rows, so that a week reads 168 rows per origin and task and
    still begins at its minute. `hours=False`: minute rows only (a chart of buckets under an hour)."""
    since = window.since.replace(second=0, microsecond=0)
    if not hours:
        return OriginTally.objects.filter(resolution=MINUTE, start__gte=since)
    first_hour = since if since.minute == 0 else since.replace(minute=0) + timedelta(hours=1)
    return OriginTally.objects.filter(Q(resolution=MINUTE, start__gte=since, start__lt=first_hour)
                                      | Q(resolution=HOUR, start__gte=first_hour))


def count_origins(window):
    """The page's origins and models tables and its chart, from the counts by origin."""
    tallies = tallies_of(window)
    # Ties are ranked by name, so that a table does not reorder itself on every refresh.
    origins = list(tallies.values("origin_model", "origin_receiver")
                   .annotate(jobs=Sum("jobs"), saves=Sum("saves"), tasks=Count("task_name", distinct=True))
                   .order_by("-jobs", "origin_model", "origin_receiver")[:TOP])
    # A model's jobs are those its saves' and deletes' receivers enqueued (an overridden save()
    # names no save); its saves, each counted once whichever receivers it reached.
    models = list(tallies.filter(origin_kind__in=("save", "delete"), saved_jobs__gt=0)
                  .values("origin_model")
                  .annotate(jobs=Sum("saved_jobs"), saves=Sum("model_saves"), receivers=Count("origin_receiver", distinct=True))
                  .order_by("-jobs", "origin_model")[:TOP])
    for model in models:
        model["per_save"] = round(model["jobs"] / model["saves"], 1) if model["saves"] else None
    for origin in origins:
        origin["per_save"] = round(origin["jobs"] / origin["saves"], 1) if origin["saves"] else None
        origin["per_minute"] = round(origin["jobs"] * 60 / window.span.total_seconds(), 1)
    chart_rows = tallies if window.bucket % HOUR == 0 else tallies_of(window, hours=False)
    return {"models": models, "origins": origins, "chart": timeline(chart_rows, window, origins[:TIMELINE_ORIGINS])}


def top_saves(window):
    """The saves that enqueued the most jobs in the window, and "" — or no saves and the reason
    when the window's jobs are too many to rank within READ_BUDGET_MS (PostgreSQL)."""
    recent = (JobExecution.objects.filter(enqueued_at__gte=window.since, origin_kind__in=ORIGIN_KINDS)
              .exclude(origin_receiver="").exclude(origin_save=""))
    try:
        with statement_timeout(recent.db, READ_BUDGET_MS):
            return list(recent.values("origin_save", "origin_model", "origin_pk", "origin_created", "origin_update_fields")
                        .annotate(jobs=Count("id"), receivers=Count("origin_receiver", distinct=True))
                        .filter(jobs__gt=1).order_by("-jobs", "origin_model", "origin_save")[:TOP]), ""
    except DatabaseError as error:
        if not cancelled(error):
            raise
    return [], (f"The jobs of the last {window.label} are too many to rank single saves within "
                f"{READ_BUDGET_MS / 1000:g} s; choose a shorter window for this table.")


def cancelled(error):
    """Whether PostgreSQL cancelled the statement for its timeout (SQLSTATE 57014), rather than
    failed: a database that is down is the site's error page, not "choose a shorter window"."""
    return getattr(error.__cause__, "sqlstate", None) == "57014"


def timeline(tallies, window, origins):
    times = bucket_times(window)
    position_of = bucket_of(times, window)
    wanted = {(origin["origin_model"], origin["origin_receiver"]) for origin in origins}
    series = {key: [0] * len(times) for key in wanted}
    rows = (tallies.filter(origin_receiver__in={receiver for _, receiver in wanted})
            .annotate(bucket=Bucket("start", window.bucket))
            .values("origin_model", "origin_receiver", "bucket").annotate(jobs=Sum("jobs")).order_by())
    for row in rows:
        key = (row["origin_model"], row["origin_receiver"])
        position = position_of(row["bucket"])
        if key in series and position is not None:
            series[key][position] += row["jobs"]
    lines = [(f"{model or '?'} → {receiver.rsplit('.', 1)[-1]}", times, counts)
             for (model, receiver), counts in sorted(series.items(), key=lambda item: -sum(item[1]))]
    return charts.line_chart(lines, title=f"Jobs enqueued per {window.bucket // 60} min, by origin", window=window)
