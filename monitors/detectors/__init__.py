"""The detectors: each a function from recorded data (as of `now`) to problems, and the runner
that turns their problems into findings.

    run_detectors()            # every detector, findings updated
    run_detectors(["orphans"]) # one
"""

import logging

from django.utils import timezone

from monitors.detectors import backlog, circuits, fanout, orphans, periodic, services
from monitors.detectors.lifecycle import record_problems

logger = logging.getLogger("monitors.detectors")

DETECTORS = {module.NAME: module.detect for module in (fanout, orphans, circuits, services, backlog, periodic)}


def run_detectors(names=None, now=None):
    """Run detectors and record their findings. Returns {name: Outcome}; a detector that fails
    is logged and skipped, and its open findings are left as they were (not resolved)."""
    now = now or timezone.now()
    outcomes = {}
    for name in names or DETECTORS:
        if name not in DETECTORS:
            raise KeyError(f"no detector {name!r}; there are {', '.join(DETECTORS)}")
        try:
            problems = DETECTORS[name](now)
        except Exception:
            logger.exception("Jobwatch detector %s failed", name)
            continue
        outcomes[name] = record_problems(name, problems, now)
    return outcomes
