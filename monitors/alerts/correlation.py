"""Which findings are one problem.

A detector says what each finding is about (`keys`: "task:app.sync", "queue:emails",
"service:api.example.com:443", "receiver:app.receivers.x", "saves:app.Order") and what its
evidence names (`links`: the tasks whose jobs wait behind a circuit, the queues they wait in, the
receivers that enqueued an orphan). Two findings are evidence of one problem when one is about
something the other is about or names. Two names that are merely *named* by both (the default
queue, say) join nothing: two services failing at once both have jobs in `celery`, and are two
problems.

Findings are told apart as causes (a service down, a storm, orphaned jobs, a queue nobody consumes)
and symptoms (a failure rate, a queue's age, duplicates). A symptom joins whatever it is linked to;
two causes join only when they are about the same thing, so two outages that share only a symptom
stay two incidents, and a circuit is not one problem with the orphans of a task it also serves. The incident's lead is its likeliest cause: the finding nearest the cause, then the
most severe, then the largest.

Nothing here reads a detector's wording or the demo's names: only kinds' places in the chain, keys
and links.
"""

from monitors.models import Severity

SEVERITY_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}

# How near the cause a kind of finding stands: 0 the monitor itself, 1 a cause, then symptoms.
# A kind not listed (a detector added later) counts as a contributing condition.
CAUSE = 1
CAUSE_RANK = {
    "monitor_stale": 0,
    "circuit_open": 1,
    "service_failing": 1,
    "fanout_storm": 1,
    "orphaned_jobs": 1,
    "queue_without_consumer": 1,
    "queue_paused": 1,  # an operator's act: what the queue's jobs wait for
    "stuck_jobs": 1,
    "circuit_flapping": 2,
    "trivial_save_enqueues": 2,
    "bulk_loop": 2,
    "duplicate_enqueues": 3,
    "queue_oldest_age": 3,
    "queue_too_long": 3,
    "queue_growing": 3,
    "periodic_duplicate": 1,  # two beats: a cause of its own
    "periodic_missed": 2,
    "periodic_not_started": 3,  # a symptom of its queue
    "periodic_failing": 3,
    "periodic_overlap": 2,
    "periodic_slow": 3,
    "failure_rate": 4,
    "enqueue_in_transaction": 4,
}
DEFAULT_RANK = 2


def cause_rank(finding):
    return CAUSE_RANK.get(finding.kind, DEFAULT_RANK)


def is_cause(finding):
    return cause_rank(finding) <= CAUSE


def lead_of(findings):
    """The finding an incident is named after: nearest the cause, most severe, largest, oldest."""
    return min(findings, key=lambda f: (cause_rank(f), -SEVERITY_RANK.get(f.severity, 0), -(f.count or 0), f.first_seen, f.pk or 0))


def about(finding):
    """What a finding is about: its keys, and its own problem (the same problem seen again is the
    same problem, whatever keys its detector gives)."""
    return {*(finding.keys or ()), f"finding:{finding.fingerprint}"}


def names_each_other(one, other):
    """One is about something the other is about or names (a link on both sides is not enough)."""
    one_keys, other_keys = about(one), about(other)
    return bool(one_keys & (other_keys | set(other.links or ())) or set(one.links or ()) & other_keys)


def belongs_with(finding, evidence):
    """Whether `finding` is evidence of the same problem as the findings in `evidence`: it is
    linked to one of them, and it brings no second cause to an incident that has one."""
    if not any(names_each_other(finding, other) for other in evidence):
        return False
    return compatible(finding, lead_of(evidence))


def compatible(one, other):
    """Two causes are one problem only when they are about the same thing (a service, a task,
    the transactions that enqueued): a circuit whose waiting jobs are a task's is not the same
    problem as that task's orphans."""
    if not (is_cause(one) and is_cause(other)):
        return True
    return bool(about(one) & about(other))


def severity_of(findings):
    return max((f.severity for f in findings), key=lambda s: SEVERITY_RANK.get(s, 0))


def impact_of(findings):
    """Jobs waiting, failed or orphaned: the largest count among the evidence (several findings
    often count the same jobs, so they are not added up)."""
    return max((f.count or 0 for f in findings), default=0)


def keys_of(findings):
    return sorted({key for f in findings for key in (*(f.keys or ()), *(f.links or ()))})
