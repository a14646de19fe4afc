"""Which jobs an action applies to: chosen ids, or everything matching a filter, in the operator's
words. The same filter comes from the dashboard (query string), the admin (the changelist's
selection) and the command line (options), and is stored as given in the audit log.

    JobSelection.from_filter({"task": "shop.charge", "state": "failed", "since": "2h"})
    JobSelection.from_ids(["3f2c…", "9a1e…"])
    JobSelection.from_finding(42)      # the jobs a finding's evidence names (e.g. its orphans)

A filter the code does not understand is an error with the reason, never "match everything".

One filter means one set of jobs wherever it is used: `filtered()` is the only place a filter
becomes a query, for the jobs list as for every action. A selection made from a filter is pinned
when it is made — ages (2h) become the times they meant, and `up_to` records the newest job id
then — so the preview, the confirmation and the action itself act on the jobs the operator saw,
not on whatever matches a minute later. A text search covers every job up to that id where
PostgreSQL's trigram indexes can find the text (migration 0017); elsewhere, without a time range, the
newest TEXT_SEARCH_ROWS jobs up to that id, in the list and in the action alike.
"""

import re
from dataclasses import dataclass, field
from datetime import UTC, timedelta

from django.db import connections
from django.db.models import Q
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from monitors.models import Finding, JobExecution, JobState, OriginKind

FILTER_KEYS = {
    "task": "task name, exactly",
    "queue": "queue name",
    "state": "one of " + ", ".join(JobState.values),
    "exception": "exception type, e.g. ConnectionError or demo.models.Order.DoesNotExist",
    "since": "enqueued after: an ISO time or an age like 30m, 2h, 7d",
    "until": "enqueued before: an ISO time or an age",
    "origin": "origin kind: " + ", ".join(OriginKind.values),
    "receiver": "the receiver or function that enqueued it",
    "worker": "worker hostname",
    "save": "the save that enqueued it (the origin's save id)",
    "circuit": "the service circuit it calls through or waits on",
    "entry": "the periodic task (beat entry) that sent it",
    "text": "text in the arguments or the error message",
    "up_to": "recorded up to this job id (the moment a list or preview was made)",
    "discarded": "yes: the failed jobs an operator discarded, which every other list leaves out",
}
# Text in arguments or errors: on PostgreSQL with pg_trgm, migration 0017's trigram indexes find it in
# the whole history. Without them (SQLite, a database where the extension could not be made), or
# for text they cannot look up, a search without a time range reads only the newest jobs: a scan of
# more than these is more than a page can afford.
TEXT_SEARCH_ROWS = 100_000
# Migration 0017's indexes, on exactly the expressions the text filter's icontains becomes.
TEXT_INDEXES = ("jobwatch_text_error", "jobwatch_text_args")
# A trigram index looks text up by its runs of three letters or digits: text without such a run
# ("ok", "7", "a.b") gives it nothing to look up, and PostgreSQL would read the whole index or table.
# In a database whose character type is C, only ASCII letters and digits count as such.
LETTER_RUN = re.compile(r"[^\W_]{3}")
ASCII_LETTER_RUN = re.compile(r"[^\W_]{3}", re.ASCII)
AGE = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d)$", re.ASCII)
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

class BadSelection(ValueError):
    """The filter or ids cannot be understood; the message says which part and why, `key` which
    filter (None when it is not one filter's fault)."""

    def __init__(self, message, key=None):
        super().__init__(message)
        self.key = key


@dataclass
class JobSelection:
    filters: dict = field(default_factory=dict)
    ids: list = field(default_factory=list)
    finding: int | None = None

    @classmethod
    def from_filter(cls, filters):
        cleaned = clean(filters)
        if not set(cleaned) - {"up_to"}:
            raise BadSelection("an empty filter would select every job: give at least one filter, or ids")
        # Validates every value too, so that a bad one fails before anything is logged as done.
        return cls(filters=pinned(cleaned))

    @classmethod
    def from_ids(cls, ids):
        ids = [str(task_id).strip() for task_id in ids if str(task_id).strip()]
        if not ids:
            raise BadSelection("no job ids given")
        return cls(ids=list(dict.fromkeys(ids)))

    @classmethod
    def from_finding(cls, finding_id):
        try:
            finding = Finding.objects.get(pk=int(finding_id))
        except (ValueError, Finding.DoesNotExist) as error:
            raise BadSelection(f"no finding {finding_id!r}") from error
        ids = finding.task_ids()
        if not ids:
            raise BadSelection(f"finding {finding.pk} ({finding.title}) names no jobs")
        return cls(ids=ids, finding=finding.pk)

    def describe(self):
        """For the audit log: the filter or ids, as given."""
        if self.ids:
            described = {"ids": self.ids, "count": len(self.ids)}
            if self.finding:
                described["finding"] = self.finding
            return described
        return {"filter": self.filters}

    @classmethod
    def from_description(cls, described):
        """The selection an audit log entry describes (a background run reads it back)."""
        if described.get("ids"):
            return cls(ids=list(described["ids"]), finding=described.get("finding"))
        return cls.from_filter(described.get("filter") or {})

    def queryset(self, discarded=False):
        """The selected jobs; those an operator discarded from the history only with
        discarded=True (and then only those)."""
        if self.ids:
            return JobExecution.objects.filter(discarded_at__isnull=not discarded, task_id__in=self.ids)
        return filtered(self.filters, discarded=discarded)[0]

    def target(self):
        """The audit log's one-line target: the finding, the ids or the filter."""
        if self.finding:
            return f"finding {self.finding} ({len(self.ids)} jobs)"
        if self.ids:
            return f"{len(self.ids)} jobs" if len(self.ids) > 1 else f"job {self.ids[0]}"
        return ", ".join(f"{key}={value}" for key, value in sorted(self.filters.items()))

    def scope(self):
        """What the selection covers, in the operator's words (the confirmation page shows it)."""
        if self.ids:
            return [f"{len(self.ids)} chosen job{'s' if len(self.ids) != 1 else ''}"]
        return [f"{key} = {value}" for key, value in self.filters.items() if key != "up_to"] + search_notes(self.filters)


def clean(filters):
    """The filter as given, stripped of blanks; an unknown key is an error."""
    cleaned = {key: str(value).strip() for key, value in (filters or {}).items() if str(value or "").strip()}
    unknown = sorted(set(cleaned) - set(FILTER_KEYS))
    if unknown:
        raise BadSelection(f"unknown filter {', '.join(unknown)}; filters are: {', '.join(FILTER_KEYS)}", key=unknown[0])
    for key, value in cleaned.items():
        if "\x00" in value:
            raise BadSelection(f"{key} contains a NUL character", key=key)
    return cleaned


def filtered(filters, discarded=False):
    """(jobs, notes): the one reading of a filter as a query, for the list and every action.
    `filters` must be clean(); a bad value raises BadSelection naming its key."""
    discarded = discarded or "discarded" in filters
    jobs = JobExecution.objects.filter(discarded_at__isnull=not discarded)
    for key, value in filters.items():
        jobs = apply_filter(jobs, key, value)
    if text_search_bounded(filters, jobs.db):
        top = int(filters["up_to"]) if "up_to" in filters else newest_job_id()
        jobs = jobs.filter(id__gt=top - TEXT_SEARCH_ROWS)
    return jobs, search_notes(filters, jobs.db)


def search_notes(filters, alias=None):
    """What the list and the confirmation say about how far back the text filter reads."""
    alias = alias or JobExecution.objects.all().db
    if not text_search_bounded(filters, alias):
        return []
    if trigram_indexes(alias)[0]:
        return [f"Text with fewer than three letters or digits in a row is searched in the newest {TEXT_SEARCH_ROWS:,} jobs;"
                " search for a longer piece of it, or add a time range (since), to search further back."]
    return [f"Text is searched in the newest {TEXT_SEARCH_ROWS:,} jobs; add a time range (since) to search further back."]


def text_search_bounded(filters, alias):
    """Whether the text filter reads only the newest TEXT_SEARCH_ROWS jobs: no time range, and no
    index that can find the text."""
    return "text" in filters and "since" not in filters and not text_indexed(filters["text"], alias)


def text_indexed(text, alias):
    """Whether the trigram indexes of database `alias` can find `text`."""
    ready, ascii_only = trigram_indexes(alias)
    return ready and (ASCII_LETTER_RUN if ascii_only else LETTER_RUN).search(text) is not None


_trigram_indexes = {}


def trigram_indexes(alias):
    """(whether TEXT_INDEXES are there and valid, whether the database's character type is C).
    Asked once per database per process, as every list of jobs would ask: a process started before
    migration 0017 ran keeps the bounded search until it is restarted."""
    connection = connections[alias]
    if connection.vendor != "postgresql":
        return False, False
    key = (connection.settings_dict.get("HOST"), connection.settings_dict.get("PORT"), connection.settings_dict.get("NAME"))
    if key not in _trigram_indexes:
        with connection.cursor() as cursor:
            # A partitioned table's index is valid once every partition has its own.
            cursor.execute(
                "SELECT (SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
                "        WHERE i.indrelid = to_regclass(%s) AND c.relname = ANY(%s) AND i.indisvalid) = %s,"
                " (SELECT datctype IN ('C', 'POSIX') FROM pg_database WHERE datname = current_database())",
                [JobExecution._meta.db_table, list(TEXT_INDEXES), len(TEXT_INDEXES)])
            _trigram_indexes[key] = tuple(bool(value) for value in cursor.fetchone())
    return _trigram_indexes[key]


def forget():
    """Ask again (tests, after making or dropping the indexes)."""
    _trigram_indexes.clear()


def pinned(filters):
    """The same filter, fixed to this moment: ages become times, and up_to the newest job id."""
    fixed = dict(filters)
    for key in ("since", "until"):
        if key in fixed and AGE.match(fixed[key].lower()):
            fixed[key] = moment(fixed[key], key).isoformat(timespec="seconds")
    fixed.setdefault("up_to", str(newest_job_id()))
    filtered(fixed)  # every value checked now
    return fixed


def newest_job_id():
    """The highest job id handed out so far. On PostgreSQL that is the id sequence's last value:
    every job's id is at most that (an upsert that updates a row spends a value too, which only
    raises the bound), and reading it costs nothing, where the newest row is a plan over every day
    partition of the history."""
    alias = JobExecution.objects.all().db
    connection = connections[alias]
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            # No row: the ids come from no sequence (not Django's schema). NULL: the sequence has
            # handed out nothing yet, or this role may not read it; the table then says.
            cursor.execute("SELECT last_value FROM pg_sequences WHERE format('%%I.%%I', schemaname, sequencename)"
                           " = pg_get_serial_sequence(%s, 'id')", [JobExecution._meta.db_table])
            row = cursor.fetchone()
            if row is not None and row[0] is not None:
                return row[0]
    return JobExecution.objects.using(alias).order_by("-id").values_list("id", flat=True).first() or 0


def apply_filter(jobs, key, value):
    if key == "task":
        return jobs.filter(task_name=value)
    if key == "queue":
        return jobs.filter(queue=value)
    if key == "state":
        if value not in JobState.values:
            raise BadSelection(f"state {value[:40]!r} is not one of {', '.join(JobState.values)}", key=key)
        return jobs.filter(state=value)
    if key == "exception":
        # "DoesNotExist" matches "demo.models.Order.DoesNotExist": the type's last part is enough.
        return jobs.filter(exception_type__in=[value]) | jobs.filter(exception_type__endswith=f".{value}")
    if key == "since":
        return jobs.filter(enqueued_at__gte=moment(value, key))
    if key == "until":
        return jobs.filter(enqueued_at__lt=moment(value, key))
    if key == "origin":
        if value not in OriginKind.values:
            raise BadSelection(f"origin {value[:40]!r} is not one of {', '.join(OriginKind.values)}", key=key)
        return jobs.filter(origin_kind=value)
    if key == "receiver":
        return jobs.filter(origin_receiver=value)
    if key == "worker":
        return jobs.filter(worker=value)
    if key == "save":
        return jobs.filter(origin_save=value)
    if key == "entry":
        return jobs.filter(origin_entry=value)
    if key == "circuit":
        return jobs.filter(circuit=value)
    if key == "text":
        return jobs.filter(text_condition(value))
    if key == "discarded":  # chosen in filtered(): here only checked
        if value != "yes":
            raise BadSelection(f"discarded={value[:40]!r}: the only value is yes", key=key)
        return jobs
    if key == "up_to":
        if not (value.isascii() and value.isdigit()) or int(value) > MAX_JOB_ID:
            raise BadSelection(f"up_to={value[:40]!r} is not a job id", key=key)
        return jobs.filter(id__lte=int(value))
    raise BadSelection(f"unknown filter {key!r}", key=key)


def text_condition(text):
    """Jobs with `text` in their arguments or error message. On PostgreSQL this is
    UPPER(column::text) LIKE UPPER('%…%'), the expressions migration 0017 indexes (change one,
    change the other). Django escapes % and _ in the value: they are literal."""
    return Q(exception_message__icontains=text) | Q(args__icontains=text)


# PostgreSQL's bigint, the execution table's id.
MAX_JOB_ID = 2**63 - 1


def moment(value, key):
    """An ISO time or an age (30m, 2h, 7d) as an aware datetime; anything else — a month 13, an
    offset of +99:00, an age older than the calendar — is a BadSelection naming the key."""
    problem = f"{key}={value[:60]!r} is neither an ISO time (2026-11-23T10:00) nor an age (30m, 2h, 7d)"
    try:
        age = AGE.match(value.lower())
        if age:
            return timezone.now() - timedelta(seconds=float(age.group(1)) * UNITS[age.group(2)])
        parsed = parse_datetime(value)
        if parsed is None:
            raise BadSelection(problem, key=key)
        # In UTC now: a time at the calendar's edge whose offset pushes it past year 1 or 9999
        # fails here, with the key named, rather than in the database driver.
        return (parsed if parsed.tzinfo else timezone.make_aware(parsed)).astimezone(UTC)
    except (ValueError, OverflowError) as error:
        if isinstance(error, BadSelection):
            raise
        raise BadSelection(f"{problem}: {error}", key=key) from error
