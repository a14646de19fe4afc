"""The Periodic tasks page and an entry's page: every beat entry with its schedule in words, when
it should run next, its last run, its last 30 runs as a strip and their durations, and its
success rate; an entry's page with its runs and their durations over time, Run now and, for django-celery-beat's entries, Enable/Disable. Entries come from the
Celery app's beat_schedule and django-celery-beat's table (monitors/periodic/schedule.py); runs
are the jobs whose origin_entry names them, read through their partial index."""

from urllib.parse import urlencode

from django.http import HttpResponseRedirect
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from monitors.actions import NotSwitchable, run_periodic_now, set_periodic_enabled
from monitors.heartbeats import BEAT
from monitors.models import Finding, MonitorHeartbeat
from monitors.periodic.runs import recent_runs
from monitors.periodic.schedule import entries, scheduler_in_use
from monitors.periodic.status import all_statuses, entry_status
from monitors.web import charts
from monitors.web.access import staff_only
from monitors.web.actions import confirmation
from monitors.web.params import BadParameter, Count, Text, query
from monitors.web.respond import respond

STRIP = 30  # runs shown as marks on the list
PAGE_SIZE = 50  # entries on a page of the list
ENTRY_RUNS = 100  # runs on an entry's page (the jobs list has them all, keyset paged)


@staff_only
@query(q=Text(max_length=200), page=Count(default=1, maximum=100_000))
def periodic_list(request):
    """A page of PAGE_SIZE entries, those with an open finding first (then by name), among those
    whose name or task holds `q`: a site with hundreds of entries reads its troubles at the top
    and finds any entry by name, and the page reads the runs of the entries it shows only."""
    search, page = request.query["q"].casefold(), max(request.query["page"], 1)
    known = entries()
    matching = {name: entry for name, entry in known.items()
                if not search or search in name.casefold() or search in entry.task.casefold()}
    open_findings = {}
    for finding in Finding.objects.filter(detector="periodic", status="open").order_by("-last_seen").only(
            "pk", "subject", "kind", "title"):
        open_findings.setdefault(finding.subject, finding)
    ordered = sorted(matching, key=lambda name: (name not in open_findings, name))
    page = min(page, max(1, -(-len(ordered) // PAGE_SIZE)))  # past the end: the last page
    shown = ordered[(page - 1) * PAGE_SIZE: page * PAGE_SIZE]
    rows = all_statuses(count=STRIP, known={name: matching[name] for name in shown})
    for row in rows:
        finding = open_findings.get(row["name"])
        row["finding"] = {"id": finding.pk, "kind": finding.kind, "title": finding.title} if finding else None
    beat = MonitorHeartbeat.objects.filter(task=BEAT).first()
    context = {
        "entries": rows, "beat_started_at": beat.last_run_at if beat else None, "scheduler": scheduler_in_use(),
        "q": request.query["q"], "page": page, "page_size": PAGE_SIZE, "matching": len(matching), "total": len(known),
        "with_findings": sum(1 for name in matching if name in open_findings),
        "disabled": sum(1 for entry in matching.values() if not entry.enabled),
        "previous_page": page - 1 if page > 1 else None,
        "next_page": page + 1 if page * PAGE_SIZE < len(matching) else None,
    }
    return respond(request, "jobwatch/periodic.html", context, fragments=["periodic-table"],
                   api=["entries", "beat_started_at", "scheduler", "q", "page", "page_size", "matching", "total",
                        "with_findings", "disabled", "previous_page", "next_page"])


@staff_only
@query(name=Text(max_length=200))
def periodic_entry(request):
    name = request.query["name"]
    if not name:
        raise BadParameter("name", "which periodic task? (?name=the entry's name, as on the Periodic tasks page)")
    now = timezone.now()
    entry = entries().get(name)
    runs = recent_runs([name], ENTRY_RUNS)[name]
    beat = MonitorHeartbeat.objects.filter(task=BEAT).first()
    row = entry_status(entry, runs, beat, now) if entry is not None else None
    timed = [run for run in reversed(runs) if run["runtime"] is not None]
    context = {
        "name": name, "entry": row, "runs": runs, "known": entry is not None,
        "chart": charts.line_chart([("runtime (s)", [run["enqueued_at"] for run in timed],
                                     [round(run["runtime"], 4) for run in timed])],
                                   title=f"Duration of its last {len(timed)} runs (s)", y_title="s"),
    }
    return respond(request, "jobwatch/periodic_entry.html", context, fragments=["periodic-runs"],
                   api=["name", "entry", "runs", "known"])


def posted_name(request):
    name = request.POST.get("name", "").strip()
    if not name or len(name) > 200 or "\x00" in name:
        raise BadParameter("name", "which periodic task? (the entry's name, at most 200 characters)")
    return name


def back_to_entry(name):
    return HttpResponseRedirect(f"{reverse('monitors:periodic_entry')}?{urlencode({'name': name})}")


@staff_only
@require_POST
def periodic_run(request):
    """Run now: a POST, confirmed first (what will be sent, where), then
    monitors/actions/periodic.py, which checks monitors.run_periodic_tasks and writes the audit
    log."""
    name = posted_name(request)
    try:
        if request.POST.get("confirmed") != "yes":
            preview = run_periodic_now(request.user, name, surface="dashboard", dry_run=True)
            return confirmation(request, "run", f"Run {name} now?", preview,
                                {"entry": name, "message": preview.log.parameters, "confirm_label": f"Yes, run {name} now"})
        run_periodic_now(request.user, name, surface="dashboard")
    except LookupError as error:
        raise BadParameter("name", str(error)) from error
    return back_to_entry(name)


@staff_only
@require_POST
def periodic_switch(request):
    """Enable or Disable a django-celery-beat entry: a POST (`enabled` yes or no), confirmed first,
    then monitors/actions/periodic.py, which checks monitors.switch_periodic_tasks and writes the
    audit log."""
    name = posted_name(request)
    if request.POST.get("enabled") not in ("yes", "no"):
        raise BadParameter("enabled", "yes (enable the entry) or no (disable it)")
    enabled = request.POST["enabled"] == "yes"
    verb = "enable" if enabled else "disable"
    try:
        if request.POST.get("confirmed") != "yes":
            preview = set_periodic_enabled(request.user, name, enabled, surface="dashboard", dry_run=True)
            return confirmation(request, verb, f"{verb.capitalize()} {name}?", preview,
                                {"entry": name, "confirm_label": f"Yes, {verb} {name}"})
        set_periodic_enabled(request.user, name, enabled, surface="dashboard")
    except (LookupError, NotSwitchable) as error:
        raise BadParameter("name", str(error)) from error
    return back_to_entry(name)
