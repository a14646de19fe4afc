"""Reading kombu's filesystem broker, the embedded default: one file per message in
`data_folder_in`, named `<ms>_<uuid>.<queue>.msg`. Workers take the lexically first file of a
queue, so sorted names are the consumption order. Reading a file never moves or locks it."""

import json
import os
from datetime import UTC, datetime
from pathlib import Path

from monitors.brokers.base import GONE, Batches, BrokerAdapter, BrokerUnavailable, QueueStats, Taken
from monitors.brokers.decoding import decode_virtual_envelope

SUFFIX = ".msg"


class FilesystemBroker(BrokerAdapter):
    kind = "filesystem"

    def __init__(self, app):
        self.app = app
        options = app.conf.broker_transport_options or {}
        folder = options.get("data_folder_in")
        if not folder:
            raise BrokerUnavailable("filesystem broker: broker_transport_options has no data_folder_in")
        self.folder = Path(folder)
        self.control_folder = Path(options.get("control_folder") or "control")
        if not self.folder.is_dir():
            raise BrokerUnavailable(f"filesystem broker: {self.folder} is not a folder")

    def files_by_queue(self):
        """{queue: [file names in consumption order]}, from one directory listing."""
        try:
            names = sorted(os.listdir(self.folder))
        except OSError as error:
            raise BrokerUnavailable(f"filesystem broker: {error}") from error
        queues = {}
        for name in names:
            if not name.endswith(SUFFIX):
                continue
            queue = name.partition(".")[2][: -len(SUFFIX)]
            queues.setdefault(queue, []).append(name)
        return queues

    def queue_names(self):
        names = set(self.files_by_queue())
        for table in self.control_folder.glob("*.exchange"):
            if table.name.startswith(("celery.pidbox", "reply.celery.pidbox", "celeryev")):
                continue
            try:
                rows = json.loads(table.read_text())
            except (OSError, ValueError):
                continue
            names.update(row[2] for row in rows if isinstance(row, list) and len(row) == 3 and row[2])
        return names

    def stats(self, queues):
        files = self.files_by_queue()
        result = {}
        for queue in queues:
            waiting = files.get(queue, [])
            result[queue] = QueueStats(
                name=queue,
                depth=len(waiting),
                depth_by_priority={0: len(waiting)} if waiting else {},
                oldest_published_at=self.published_at(waiting[0]) if waiting else None,
                note="the filesystem broker does not track in-flight messages or consumers",
            )
        return result

    def published_at(self, name):
        """From the message's publish header, or else the file's own time."""
        message = self.read(name)
        if message is not None and message.published_at:
            return message.published_at
        try:
            return datetime.fromtimestamp((self.folder / name).stat().st_mtime, UTC)
        except OSError:
            return None

    def read(self, name, clean=True):
        try:
            raw = (self.folder / name).read_bytes()
        except OSError:
            return None  # taken by a worker since the listing
        return decode_virtual_envelope(raw, clean)

    def peek(self, queue, offset=0, limit=50):
        messages = []
        for position, name in enumerate(self.files_by_queue().get(queue, [])[offset : offset + limit], start=offset):
            message = self.read(name)
            if message is not None:
                message.position = position
                message.delivery_tag = name
                messages.append(message)
        return messages

    def scan(self, queue, chunk=1000, decode=True, clean=False):
        for name in self.files_by_queue().get(queue, []):
            if decode:
                message = self.read(name, clean)
                if message is not None:
                    yield message
            else:
                try:
                    yield (self.folder / name).read_bytes()
                except OSError:
                    continue

    def take(self, queue, matches, archive, confirm, batch=500, limit=None):
        def remove(taken):
            try:
                (self.folder / taken.locator).unlink()
                taken.removed = True
            except FileNotFoundError:
                taken.note = GONE

        batches = Batches(archive, confirm, remove, batch)
        for name in self.files_by_queue().get(queue, []):
            if limit is not None and batches.matched >= limit:
                break
            try:
                raw = (self.folder / name).read_bytes()
            except OSError:
                continue  # taken by a worker since the listing
            message = decode_virtual_envelope(raw)
            if matches(message):
                batches.add(Taken(raw=raw, message=message, locator=name))
        batches.flush()
        return batches.matched

    def put_back(self, queue, raw, priority=None):
        """Through the app's own transport, which writes the file under a new name (a restored
        message joins the end of its queue)."""
        with self.app.connection_for_write() as connection:
            connection.default_channel._put(queue, json.loads(raw))
