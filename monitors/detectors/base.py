"""What every detector returns, and how it reads its thresholds.

A detector is a function `detect(now) -> list[Problem]`: it reads recorded data as of `now`
(never the clock), so the same data and the same `now` give the same problems, and says what is
wrong with the evidence and the likely cause and fix in the operator's words.
"""

from dataclasses import dataclass, field

from monitors.conf import DEFAULT_THRESHOLDS, setting


@dataclass
class Problem:
    """One problem as a detector sees it.

    `severity` follows one scale for every detector (the README's table): critical = work is not
    getting done now; warning = it will be soon, or is partly; info = a code smell, shown but not
    paged by default. `keys` name what the problem is about and `links` what its evidence names,
    as typed names ("task:…", "queue:…", "service:…", "receiver:…", "saves:app.Model"): problems
    that share one are evidence of one incident (monitors/alerts/correlation.py). `count` is its
    impact in jobs (waiting, failed, orphaned, enqueued needlessly), used to rank incidents.
    """

    kind: str
    subject: str
    severity: str
    title: str
    explanation: str
    evidence: dict = field(default_factory=dict)
    count: int = 0
    fix: str = ""
    keys: list = field(default_factory=list)
    links: list = field(default_factory=list)

    @property
    def fingerprint(self):
        return f"{self.kind}:{self.subject}"[:400]


def threshold(name, queue=None, task=None, entry=None):
    """A threshold: per periodic task (PERIODIC_THRESHOLDS, by entry name), per queue
    (QUEUE_THRESHOLDS), per task (TASK_THRESHOLDS), THRESHOLDS, default."""
    for scope, key in (("PERIODIC_THRESHOLDS", entry), ("QUEUE_THRESHOLDS", queue), ("TASK_THRESHOLDS", task)):
        if key is not None:
            override = setting(scope).get(key, {})
            if name in override:
                return override[name]
    return setting("THRESHOLDS").get(name, DEFAULT_THRESHOLDS[name])


def short(text, length=200):
    """An error message on one line, cut to `length` characters, for titles and evidence."""
    text = " ".join((text or "").split())
    return text if len(text) <= length else text[: length - 1] + "…"
