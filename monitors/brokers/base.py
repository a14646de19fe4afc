"""The one small interface every broker adapter implements.

Adapters read; they never consume, reorder or redeliver a message where the broker lets them
avoid it. Where peeking does change something (RabbitMQ), `peek_warning` says what, so the UI
can say it before doing it.
"""

from dataclasses import dataclass, field
from datetime import datetime


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


class BrokerAdapter:
    kind = "?"
    peek_warning = ""  # what peeking does to the messages, when it does anything

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

    def close(self):
        pass
