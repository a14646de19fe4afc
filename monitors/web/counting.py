"""Counts a page can afford: exact up to a cap, then "10,000+"; on PostgreSQL an exact count that
would take too long gives way to the planner's estimate, and a table's total is always the
estimate. Each count says which it is, so a page never shows a guess as a fact."""

import contextlib
from dataclasses import dataclass

from django.core.paginator import Paginator
from django.db import DatabaseError, connections, transaction
from django.utils.functional import cached_property

CAP = 10_000
# What an exact count may take before the planner's estimate stands in, and what that estimate may
# take (a plan: over a day-partitioned history, tens of partitions, and a text filter's trigram
# indexes on each) before the count is given up as "many": together within the pages' 50 ms.
TIMEOUT_MS = 20
ESTIMATE_TIMEOUT_MS = 15
# What an answer that lists rows and counts them too (the page without JavaScript, the JSON with
# ?count=1) may spend on both: the count gets what the rows left of it, its two
# timeouts shrunk alike, and says "many" when too little is left to try. 30 of the pages' 50 ms
# (a whole page counts its rows' rendering, PAGE_RENDER_MS in jobs.py, as spent from it): the rest
# is the request's own work (session, user, middleware, the response), which doubles on a machine
# running at half speed while a statement timeout does not (at 38 these answers reached 52–54 ms
# p95 on such a run of benchmarks/dashboard.py). The page's own count fragment lists nothing and
# keeps its whole TIMEOUT_MS + ESTIMATE_TIMEOUT_MS.
ANSWER_BUDGET_MS = 30
LEAST_WORTH_TRYING_MS = 4
# The first try of an exact count, before the planner is asked whether one is worth waiting for.
QUICK_COUNT_MS = 5


@dataclass
class Count:
    value: int
    kind: str  # "exact", "at least" (capped), "estimated", or "unknown" (neither in time)

    @property
    def label(self):
        if self.kind == "unknown":
            return "many"
        if self.kind == "at least":
            return f"{self.value:,}+"
        if self.kind == "estimated":
            return f"≈ {self.value:,}"
        return f"{self.value:,}"

    def as_dict(self):
        return {"value": self.value, "kind": self.kind, "label": self.label}


def bounded_count(queryset, filtered=True, cap=None, timeout_ms=None, estimate_only=False, estimate=True, spent_ms=0):
    """`cap` and `timeout_ms` default to CAP and TIMEOUT_MS as they are when called.
    `estimate_only`: a filter no index serves (text search) goes straight to the estimate.
    `estimate=False`: a filter whose plan is itself slow to make (text through trigram indexes: the
    planner costs both indexes of every day partition) says "many" when the count does not finish.
    `spent_ms`: what the answer already spent listing rows, out of ANSWER_BUDGET_MS."""
    cap = CAP if cap is None else cap
    timeout_ms = TIMEOUT_MS if timeout_ms is None else timeout_ms
    connection = connections[queryset.db]
    if connection.vendor != "postgresql":
        return capped(queryset[: cap + 1].count(), cap)
    exact_ms, estimate_ms = timeouts(timeout_ms, spent_ms)
    if exact_ms is None:
        return Count(0, "unknown")
    if estimate_only:
        return estimated(queryset, connection, exact_ms + estimate_ms)
    if not filtered:
        total = table_estimate(queryset.model, connection)
        # A small (or never analysed) table counts exactly, and cheaply.
        if total >= cap:
            return Count(total, "estimated")
    if not estimate or exact_ms <= QUICK_COUNT_MS:
        counted = exact_count(queryset, cap, exact_ms)
        return Count(0, "unknown") if counted is None else capped(counted, cap)
    # Most counts are small and finish at once. One that does not is asked of the planner, and
    # counted on only when the planner expects fewer than `cap` rows: past it an exact count could
    # at best say "cap+" after reading cap rows, which a large history cannot do in milliseconds,
    # so its time would be spent only to fall back to the same estimate.
    counted = exact_count(queryset, cap, QUICK_COUNT_MS)
    if counted is not None:
        return capped(counted, cap)
    guess = estimated(queryset, connection, estimate_ms)
    if guess.kind == "unknown" or guess.value >= cap:
        # Not even planned in time (an exact count must be planned too), or past the cap.
        return guess
    counted = exact_count(queryset, cap, exact_ms - QUICK_COUNT_MS)
    return guess if counted is None else capped(counted, cap)


def exact_count(queryset, cap, timeout_ms):
    """Up to cap + 1 rows counted, or None when the statement timeout cut the count short."""
    try:
        with statement_timeout(queryset.db, timeout_ms):
            return queryset[: cap + 1].count()
    except DatabaseError:
        return None


def timeouts(timeout_ms, spent_ms):
    """(exact count's, estimate's) timeouts in ms, or (None, None) when not worth trying: in full
    when nothing was spent before the count, else scaled down to what is left of the budget."""
    whole = timeout_ms + ESTIMATE_TIMEOUT_MS
    left = whole if not spent_ms else min(whole, ANSWER_BUDGET_MS - spent_ms)
    if left < LEAST_WORTH_TRYING_MS:
        return None, None
    exact_ms = max(round(left * timeout_ms / whole), 1)
    return exact_ms, max(left - exact_ms, 1)


def estimated(queryset, connection, timeout_ms=ESTIMATE_TIMEOUT_MS):
    try:
        with statement_timeout(queryset.db, timeout_ms):
            return Count(plan_estimate(queryset, connection), "estimated")
    except DatabaseError:
        return Count(0, "unknown")


def capped(counted, cap):
    """What a count of up to cap + 1 rows says: exact, or "at least cap"."""
    return Count(min(counted, cap), "at least" if counted > cap else "exact")


def table_estimate(model, connection):
    with connection.cursor() as cursor:
        cursor.execute("SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = %s::regclass", [model._meta.db_table])
        row = cursor.fetchone()
    return int(row[0]) if row else 0


def plan_estimate(queryset, connection):
    """The planner's row estimate, read inside the server by jobwatch_row_estimate (migration 0018)
    rather than by fetching the whole plan. The query goes as text with its values quoted by the
    driver, as Django's own cursor would send it."""
    sql, params = queryset.query.sql_with_params()
    connection.ensure_connection()
    query = connection.ops.compose_sql(sql, params)
    with connection.cursor() as cursor:
        cursor.execute("SELECT jobwatch_row_estimate(%s)", [query])
        return int(cursor.fetchone()[0])


def with_timeout(queryset, timeout_ms):
    """Evaluate a queryset under a statement timeout (PostgreSQL); raises DatabaseError when cut."""
    with statement_timeout(queryset.db, timeout_ms):
        return list(queryset)


@contextlib.contextmanager
def statement_timeout(alias, timeout_ms):
    """A transaction whose statements PostgreSQL cancels after `timeout_ms` (other databases: no
    limit). SET LOCAL ends with the transaction, so the connection goes back unchanged.

    Without JIT compilation, too: PostgreSQL compiles the expressions of any plan it costs above
    jit_above_cost (100,000 by default, which a count or an estimate over a large history passes)
    even to only EXPLAIN it, and that compiling took 50 ms of a 60 ms estimate over 39 day
    partitions (benchmarks/dashboard.py's data). A statement given milliseconds never gains it back."""
    connection = connections[alias]
    if connection.vendor != "postgresql":
        yield
        return
    nested = connection.in_atomic_block  # e.g. a host project with ATOMIC_REQUESTS
    with transaction.atomic(using=alias):
        with connection.cursor() as cursor:
            if nested:
                # SET LOCAL lasts until the outer transaction ends, not this savepoint: put the
                # request's own settings back afterwards, or its later statements keep this timeout.
                cursor.execute("SELECT current_setting('statement_timeout'), current_setting('jit')")
                before = cursor.fetchone()
            cursor.execute(f"SET LOCAL statement_timeout = {int(timeout_ms)}; SET LOCAL jit = off")
        yield
    # Here only when the block succeeded (a failed one rolled back to its savepoint, its settings too).
    if nested:
        with connection.cursor() as cursor:
            cursor.execute("SELECT set_config('statement_timeout', %s, true), set_config('jit', %s, true)", before)


class AffordablePaginator(Paginator):
    """Django's paginator, for the admin's lists of tables that grow with the jobs: the changelist
    counts its rows on every view (filtered or not), which over millions of rows takes seconds, so
    its count is bounded_count's. `counted` says which kind of count it is, for the template
    (admin/monitors/pagination.html); `count` is what the page links are made from."""

    @cached_property
    def counted(self):
        return bounded_count(self.object_list, filtered=self.object_list.query.has_filters())

    @cached_property
    def count(self):
        counted = self.counted
        # A count that is not exact may be below the rows there are: never let it cut a page
        # short, and leave the pages up to the cap reachable. Past the cap, too, it is above the
        # admin's list_max_show_all (200), so "Show all" is offered only for an exact count.
        return counted.value if counted.kind == "exact" else max(counted.value, CAP + 1)

    def page(self, number):
        """A whole page of rows, or fewer only where the rows end (Django's own stops at `count`)."""
        number = self.validate_number(number)
        bottom = (number - 1) * self.per_page
        return self._get_page(self.object_list[bottom:bottom + self.per_page], number, self)
