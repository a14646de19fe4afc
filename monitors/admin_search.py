"""What the admin's search box finds among recorded jobs, on any size of history.

Django's own search (`search_fields`) turns a term into `icontains` on every field named, ORed:
with one field no index can serve, PostgreSQL reads the whole execution table for every search,
and a term that matches nothing (a typo) reads all of it. Here each part of the search has an
index to go to, so a search costs index lookups, whatever the size of the history:

- a task id, exactly (the table's unique key): when one job has that id, the search is that job;
- the jobs of every task whose name contains the term, the names found among the task counters
  the recorder keeps (a few hundred rows), then looked up by the task index;
- the term in the arguments or the error message: the jobs list's own text filter
  (monitors/actions/selection.py), exact over the whole history where PostgreSQL's trigram
  indexes can find it, else over the newest TEXT_SEARCH_ROWS jobs;
- the term in the receiver that enqueued the job or the exception's type, over the newest
  NAME_SEARCH_ROWS jobs: no index holds those for a search inside them.
"""

from django.db.models import Q

from monitors.actions import selection
from monitors.models import TaskCounter

# At most this many task names join the search (a term like "a" matches most of them, and the
# lookup then costs as much as the list without the search).
MOST_TASK_NAMES = 200
# Receivers and exception types have no index to search inside them: they are searched in the
# newest jobs only. Fewer than the text filter's TEXT_SEARCH_ROWS, as this part runs with every
# search (100,000 rows rechecked cost the admin's search 100 ms on the 10 M benchmark history,
# 20,000 about 20).
NAME_SEARCH_ROWS = 20_000
TASK_ID_LENGTH = 255  # JobExecution.task_id's max_length: a longer term is no task id


def search_jobs(jobs, term):
    """(jobs matching `term`, notes for the operator about what was searched how far back)."""
    term = term.strip()
    if not term:
        return jobs, []
    if "\x00" in term:
        return jobs.none(), ["The search holds a NUL character, which no job's name or text can hold."]
    if len(term) <= TASK_ID_LENGTH and jobs.filter(task_id=term).exists():
        # A task id, pasted from a log or a traceback: that job is what is looked for.
        return jobs.filter(task_id=term), []
    newest = selection.newest_job_id()
    matches = recent(newest, Q(origin_receiver__icontains=term) | Q(exception_type__icontains=term), NAME_SEARCH_ROWS)
    names = task_names_containing(term)
    if names:
        matches |= Q(task_name__in=names)
    matches |= text_matches(term, jobs.db, newest)
    notes = [f"Receivers and exception types are searched in the newest {NAME_SEARCH_ROWS:,} jobs; "
             "the dashboard's jobs list (receiver=, exception=) goes further back."]
    notes += selection.search_notes({"text": term}, jobs.db)
    return jobs.filter(matches), notes


def recent(newest, condition, rows):
    """`condition`, among the newest `rows` jobs (ids up to `newest`)."""
    return Q(id__gt=newest - rows) & condition


def task_names_containing(term):
    return list(TaskCounter.objects.filter(name__icontains=term).order_by("name")
                .values_list("name", flat=True).distinct()[:MOST_TASK_NAMES])


def text_matches(term, alias, newest):
    """The jobs list's text filter, bounded as the list bounds it."""
    condition = selection.text_condition(term)
    return recent(newest, condition, selection.TEXT_SEARCH_ROWS) if selection.text_search_bounded({"text": term}, alias) else condition
