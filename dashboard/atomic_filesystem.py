"""kombu's filesystem transport, with messages that appear in the queue folder only once complete.

kombu's own `_put` creates the message file under its final name and then writes into it, while
a consumer's `_get` takes (moves and reads) files without waiting for the writer's lock. A worker
that polls at the wrong moment reads an empty or half-written file, fails to decode it and stops
with "Unrecoverable error: JSONDecodeError" (celery/kombu#1551), and the message is lost. Writing
under a name the consumer ignores and renaming it into place (atomic on one filesystem) closes
that window.
"""

import os
import uuid
from time import monotonic_ns

from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps


class Channel(filesystem.Channel):
    def _put(self, queue, payload, **kwargs):
        # kombu's name scheme (consumers sort the names and match ".<queue>.msg"), with a
        # zero-padded nanosecond stamp instead of milliseconds: messages published within the same
        # millisecond keep their order, and the sort never meets numbers of different lengths.
        name = f"{monotonic_ns():020d}_{uuid.uuid4()}.{queue}.msg"
        final_path = os.path.join(self.data_folder_out, name)
        # Not "<final name>.partial": kombu before 5.7 takes any file whose name merely contains
        # ".<queue>.msg", and would take that one half-written. Without ".msg", no consumer does.
        partial_path = f"{final_path[: -len('.msg')]}.partial"
        try:
            with open(partial_path, "wb") as partial:
                partial.write(str_to_bytes(dumps(payload)))
            os.replace(partial_path, final_path)
        except OSError as exc:
            raise filesystem.ChannelError(f"Cannot add file {final_path!r} to directory") from exc


class Transport(filesystem.Transport):
    Channel = Channel
