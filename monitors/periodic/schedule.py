"""Every periodic task (beat entry) the site knows, read from where beat reads it: the Celery app's
`beat_schedule` (Jobwatch's own entries included) and, where django-celery-beat is installed,
its PeriodicTask table (enabled or not, one-off, the scheduler's last run and run count). An entry
in both is the table's: django-celery-beat's DatabaseScheduler copies the app's schedule into it.

Which of them beat runs depends on its scheduler: with django-celery-beat's DatabaseScheduler the
table's enabled entries; with Celery's own (the default) the app's schedule, and the table's rows
are listed as not run (`runs_in_beat`). The scheduler is the one beat said it runs when it last
started (often chosen on its command line, `--scheduler`), else the app's `beat_scheduler`."""

import json
from functools import cached_property
from dataclasses import dataclass, field
from datetime import datetime

from celery import current_app
from celery.schedules import maybe_schedule
from celery.schedules import schedule as every_interval
from django.apps import apps

from monitors.heartbeats import BEAT
from monitors.models import MonitorHeartbeat
from monitors.periodic.words import in_words
from monitors.recording.events import cleaned_arguments

BEAT_SCHEDULE, DATABASE = "beat_schedule", "django-celery-beat"


@dataclass  # not frozen: a frozen dataclass sets each field through object.__setattr__, and the
# list reads 500 of them per request
class Entry:
    name: str
    task: str
    schedule: object  # a Celery schedule: schedule (interval), crontab, solar, or django-celery-beat's clocked
    # As the schedule holds them: read through `args` and `kwargs`, redacted and cut like a job's.
    raw_args: list = field(default_factory=list, repr=False)
    raw_kwargs: dict = field(default_factory=dict, repr=False)
    queue: str = ""
    source: str = BEAT_SCHEDULE
    enabled: bool = True
    one_off: bool = False
    runs_in_beat: bool = True
    scheduler_last_run_at: datetime | None = None  # as django-celery-beat recorded it
    changed_at: datetime | None = None  # when its django-celery-beat row was last saved
    total_run_count: int | None = None
    zone: str = "UTC"

    @cached_property
    def arguments(self):
        # Worked out when shown (a page of the list, an entry's page), not for every entry read:
        # redacting 500 entries' arguments was a fifth of the list's time.
        return cleaned_arguments(list(self.raw_args), dict(self.raw_kwargs))

    @property
    def args(self):
        return self.arguments["args"] or []

    @property
    def kwargs(self):
        return self.arguments["kwargs"] or {}

    @property
    def words(self):
        return in_words(self.schedule, self.zone)

    @property
    def interval_seconds(self):
        """The seconds between two runs where the schedule has one interval (None for crontab,
        solar and one-offs, whose gaps vary)."""
        if isinstance(self.schedule, every_interval) and not self.one_off:
            return self.schedule.run_every.total_seconds()
        return None


def entries(app=None):
    """{name: Entry}, the app's schedule first, the table's rows over it."""
    app = app or current_app
    zone = str(app.conf.timezone or "UTC")
    uses_database = "django_celery_beat" in scheduler_in_use(app)
    found = {}
    for name, options in (app.conf.beat_schedule or {}).items():
        entry = from_beat_schedule(app, name, options, zone, runs_in_beat=not uses_database)
        if entry is not None:
            found[name] = entry
    for entry in from_database(zone, uses_database):
        found[entry.name] = entry
    return dict(sorted(found.items()))


def scheduler_in_use(app=None):
    """Beat's scheduler class ("module:Class"): as beat recorded it at its last start, else as the
    app's configuration names it."""
    recorded = MonitorHeartbeat.objects.filter(task=BEAT).values_list("scheduler", flat=True).first()
    return recorded or str((app or current_app).conf.beat_scheduler or "")


def from_beat_schedule(app, name, options, zone, runs_in_beat=True):
    try:
        schedule = maybe_schedule(options["schedule"], app=app)
    except (KeyError, TypeError, ValueError):
        return None  # beat would refuse it too; nothing to expect
    queue = (options.get("options") or {}).get("queue") or ""
    return Entry(name=str(name), task=str(options.get("task", "")), schedule=schedule,
                 raw_args=list(options.get("args") or ()), raw_kwargs=dict(options.get("kwargs") or {}), queue=str(queue),
                 source=BEAT_SCHEDULE, zone=zone, runs_in_beat=runs_in_beat)


def from_database(zone, uses_database):
    """django-celery-beat's PeriodicTask rows, where it is installed."""
    if not apps.is_installed("django_celery_beat"):
        return []
    # Optional: only where django-celery-beat is installed.
    from django_celery_beat.models import PeriodicTask

    found = []
    related = ["interval", "crontab", "solar", "clocked"]
    for row in PeriodicTask.objects.select_related(*related).order_by("name"):
        try:
            schedule = row.schedule
        except Exception:  # noqa: BLE001 (a row without a schedule: listed, never expected)
            schedule = None
        if schedule is None:
            continue
        found.append(Entry(
            name=row.name, task=row.task, schedule=schedule, raw_args=json_list(row.args), raw_kwargs=json_dict(row.kwargs),
            queue=row.queue or "", source=DATABASE, enabled=row.enabled, one_off=row.one_off, runs_in_beat=uses_database,
            scheduler_last_run_at=row.last_run_at, total_run_count=row.total_run_count, zone=zone,
            changed_at=getattr(row, "date_changed", None)))
    return found


def json_list(text):
    try:
        value = json.loads(text or "[]")
    except ValueError:
        return []
    return value if isinstance(value, list) else []


def json_dict(text):
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def sendable(name, app=None):
    """What beat would send for entry `name`, unredacted — {"task", "args", "kwargs", "queue"} —
    read from where the entry is kept (the table's row over the app's schedule); None if no
    entry has that name."""
    app = app or current_app
    if apps.is_installed("django_celery_beat"):
        # Optional: only where django-celery-beat is installed.
        from django_celery_beat.models import PeriodicTask

        row = PeriodicTask.objects.filter(name=name).first()
        if row is not None:
            return {"task": row.task, "args": json_list(row.args), "kwargs": json_dict(row.kwargs), "queue": row.queue or ""}
    options = (app.conf.beat_schedule or {}).get(name)
    if options is None or "task" not in options:
        return None
    return {"task": options["task"], "args": list(options.get("args") or ()), "kwargs": dict(options.get("kwargs") or {}),
            "queue": (options.get("options") or {}).get("queue") or ""}
