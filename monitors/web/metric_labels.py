"""Bounded label values for /metrics. A task's name and its queue come from the message, which is
the sender's to write: a renamed task, a typo in send_task or a hostile name would each add series
to every scrape, forever (and a name like `ux.<svg onload=…>` is not one anyone wants on a graph).

A name is kept as a label value when it looks like a name (letters, digits and . _ - : / @, at most
200 characters) and is a task this site's Celery app registers, or is among the
METRICS_MAX_LABEL_VALUES busiest; every other name's counts are summed under the one value
OTHER, and `jobwatch_metrics_folded_label_values` says how many names were folded, per label."""

import re

from celery import current_app

OTHER = "(other)"
PLAUSIBLE = re.compile(r"^[A-Za-z0-9_.:/@\-]{1,200}$")


def registered_tasks():
    """The task names the Celery app knows in this process (empty when it cannot say)."""
    try:
        return set(current_app.tasks.keys())
    except Exception:  # noqa: BLE001 (an app that cannot load its tasks here: keep by activity only)
        return set()


def kept_values(activity, cap, known=frozenset()):
    """{value: activity} → the values kept as labels: plausible ones, `known` first, then the
    busiest, `cap` in all (ties by name, so a scrape is stable)."""
    plausible = [value for value in activity if PLAUSIBLE.match(value)]
    kept = {value for value in plausible if value in known}
    rest = sorted((value for value in plausible if value not in kept), key=lambda value: (-activity[value], value))
    kept.update(rest[: max(cap - len(kept), 0)])
    return kept


class Folder:
    """Maps label values to themselves or OTHER, counting the distinct values folded."""

    def __init__(self, activity, cap, known=frozenset()):
        self.kept = kept_values(activity, cap, known)
        self.folded = {value for value in activity if value not in self.kept}

    def __call__(self, value):
        return value if value in self.kept else OTHER
