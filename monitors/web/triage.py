"""Triage order: what the person on call looks at first. The most severe first (critical, warning,
info), then the largest (an incident's impact, a finding's count: jobs waiting, failed or
orphaned), then the oldest (open longest). Overview, Findings, Alerts and their JSON all sort with
this, in the database.

    in_triage_order(Incident.objects.filter(state__in=Incident.ACTIVE))
    after(in_triage_order(findings), last_row_shown)   # the next keyset page
"""

from django.db.models import Case, IntegerField, Q, Value, When

from monitors.models import Finding, Incident, Severity

SEVERITY_RANK = Case(When(severity=Severity.CRITICAL, then=Value(0)), When(severity=Severity.WARNING, then=Value(1)),
                     default=Value(2), output_field=IntegerField())

# Per model: (field, descending) from first to last; the primary key last makes the order total,
# so that a keyset page neither repeats nor skips a row. Findings: open ones before resolved ones
# ("open" < "resolved") when a list shows both.
ORDER = {
    Incident: [("severity_rank", False), ("impact", True), ("opened_at", False), ("pk", False)],
    Finding: [("status", False), ("severity_rank", False), ("count", True), ("first_seen", False), ("pk", False)],
}


def in_triage_order(queryset, first=None):
    """`first`: a Q for rows that go before all the others (an incident's lead finding)."""
    ordering = [f"-{name}" if descending else name for name, descending in ORDER[queryset.model]]
    if first is not None:
        ordering.insert(0, Case(When(first, then=Value(0)), default=Value(1), output_field=IntegerField()))
    return queryset.annotate(severity_rank=SEVERITY_RANK).order_by(*ordering)


def after(queryset, row):
    """The rows that come after `row` (a row of an in_triage_order queryset) in triage order."""
    condition = None
    for name, descending in reversed(ORDER[queryset.model]):
        value = getattr(row, name)
        beyond = Q(**{f"{name}__{'lt' if descending else 'gt'}": value})
        condition = beyond if condition is None else beyond | (Q(**{name: value}) & condition)
    return queryset.filter(condition)
