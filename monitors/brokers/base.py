"""The one small interface every broker adapter implements.

Adapters read; they never consume, reorder or redeliver a message where the broker lets them
avoid it. Where peeking does change something (RabbitMQ), `peek_warning` says what, so the UI
can say it before doing it.
"""

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


class BrokerUnavailable(Exception):
    """The broker could not be reached or answered with an error; the message says which."""


class PeekUnavailable(Exception):
    """This broker cannot show messages without consuming them (and will not)."""


@dataclass
class QueueStats:
    name: str
    depth: int | None  # messages waiting; None when the broker cannot tell
    depth_by_priority: dict[int, int] = field(default_factory=dict)
    in_flight: int | None = None  # delivered to a worker and not yet acknowledged (incl. ETA jobs)
    scheduled: int | None = None  # of those, jobs waiting inside a worker for their eta
    consumers: int | None = None  # None: this broker does not say
    oldest_published_at: datetime | None = None
    exists_on_broker: bool = True
    approximate: bool = False  # a count was capped, or the broker only estimates it
    note: str = ""


@dataclass
class Taken:
    """A message a purge takes out of a queue: exactly the bytes the broker held (what the
    archive keeps and a restore puts back), the message decoded, and where it sat."""

    raw: bytes
    message: Any  # QueuedMessage
    priority: int | None = None
    locator: Any = None  # the adapter's handle on it: Redis list key, file name, delivery tag
    removed: bool = False
    note: str = ""


GONE = "already gone when the purge came to remove it (a worker took it first)"


class Batches:
    """The rhythm of every take(): matches are collected; each full batch (and the last) is
    archived, then removed by `remove(taken)` (which sets `removed`, or a `note`), then
    confirmed."""

    def __init__(self, archive, confirm, remove, size):
        self.archive, self.confirm, self.remove, self.size = archive, confirm, remove, size
        self.chosen, self.matched = [], 0

    def add(self, taken):
        self.chosen.append(taken)
        self.matched += 1
        if len(self.chosen) >= self.size:
            self.flush()

    def flush(self):
        if not self.chosen:
            return
        self.archive(self.chosen)
        for taken in self.chosen:
            self.remove(taken)
        self.confirm(self.chosen)
        self.chosen = []


class BrokerAdapter:
    kind = "?"
    peek_warning = ""  # what peeking does to the messages, when it does anything
    purge_warning = ""  # what a purge does to the messages it does not remove, when anything

    def queue_names(self):
        """Queues the broker knows about (those it can list)."""
        raise NotImplementedError

    def stats(self, queues):
        """{name: QueueStats} for the given queue names, in as few round trips as possible."""
        raise NotImplementedError

    def peek(self, queue, offset=0, limit=50):
        """Messages from the head (next to run) onwards, decoded; never removes them."""
        raise NotImplementedError

    def scan(self, queue, chunk=1000, decode=True, clean=False):
        """Every message of the queue, streamed in chunks. clean=False leaves arguments raw, for
        detectors; decode=False yields what the broker holds."""
        raise NotImplementedError

    def take(self, queue, matches, archive, confirm, batch=500, limit=None):
        """Remove the messages of `queue` for which `matches(message)` is true, archive first:
        each batch goes to `archive(takens)`, which must have stored them durably when it
        returns; only then are they removed from the broker, exactly those messages and no
        others, and `confirm(takens)` says which were removed (`removed`, or a `note` why not).
        Returns how many matched. A crash between the two leaves a message both archived and
        still queued, never neither."""
        raise NotImplementedError(f"purging is not supported on {self.kind}")

    def put_back(self, queue, raw, priority=None):
        """Publish an archived message to `queue` again, as it was."""
        raise NotImplementedError(f"restoring is not supported on {self.kind}")

    def close(self):
        pass
