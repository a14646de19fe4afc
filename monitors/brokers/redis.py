"""Reading Celery's queues on Redis the way kombu lays them out.

- A queue is a list per priority level: `queue` for level 0 and `queue\\x06\\x163`,
  `queue\\x06\\x166`, … for the others (kombu's `priority_steps`). Workers BRPOP the levels in
  step order, so level 0 runs first, and within a level the right end (index -1) is next.
- Messages delivered to a worker but not acknowledged (prefetched, and ETA/countdown jobs that
  wait inside the worker) sit in the `unacked` hash, indexed by `unacked_index`.
- Every key may carry `global_keyprefix`.

All of it is read with LLEN / LINDEX / LRANGE / HSCAN: nothing is popped, moved or re-queued.
Connection settings come from the Celery app's own broker configuration, through kombu.
"""

import json
import uuid

import redis as redis_client

from monitors.brokers.base import GONE, BrokerAdapter, BrokerUnavailable, QueueStats, Taken
from monitors.brokers.decoding import decode_virtual_envelope

# Exchanges Celery uses for remote control and events, not for jobs.
INTERNAL_EXCHANGES = ("celery.pidbox", "reply.celery.pidbox", "celeryev")
UNACKED_SCAN_LIMIT = 20_000
# How far to the right of where a purge read a batch its messages may have moved (pushed by new
# messages on the left) and still be found without searching the whole list.
WINDOW_SLACK = 2000
REMOVE_EXACTLY = """
local wanted, removed = {}, {}
for index = 4, #ARGV do wanted[ARGV[index]] = index - 4 end
local items = redis.call('LRANGE', KEYS[1], ARGV[1], ARGV[2])
for offset, item in ipairs(items) do
  local position = wanted[item]
  if position ~= nil then
    redis.call('LSET', KEYS[1], tonumber(ARGV[1]) + offset - 1, ARGV[3])
    wanted[item] = nil
    removed[#removed + 1] = position
  end
end
for item, position in pairs(wanted) do
  if redis.call('LREM', KEYS[1], 1, item) > 0 then removed[#removed + 1] = position end
end
redis.call('LREM', KEYS[1], 0, ARGV[3])
return removed
"""


class RedisBroker(BrokerAdapter):
    kind = "redis"

    def __init__(self, app):
        self.connection = app.connection_for_read()
        try:
            channel = self.connection.default_channel
            # A plain client on kombu's own connection pool: same host, auth, TLS and db as the
            # workers, but no automatic key prefixing, which kombu applies to some commands only.
            self.client = redis_client.Redis(connection_pool=channel.client.connection_pool)
            self.client.ping()
        except Exception as error:
            self.connection.release()
            raise BrokerUnavailable(f"Redis broker unreachable: {error}") from error
        self.prefix = channel.global_keyprefix or ""
        self.sep = channel.sep
        self.priority_steps = list(channel.priority_steps)
        self.unacked_key = self.prefix + channel.unacked_key
        self.binding_pattern = self.prefix + channel.keyprefix_queue % "*"
        self._script = None

    def close(self):
        self.connection.release()

    def level_key(self, queue, step):
        return f"{self.prefix}{queue}{self.sep}{step}" if step else f"{self.prefix}{queue}"

    def queue_names(self):
        return {queue for _exchange, _routing_key, queue in self.bindings()}

    def bindings(self):
        """(exchange, routing_key, queue) from kombu's binding sets, internal exchanges left out."""
        found = []
        for key in self._call(lambda: list(self.client.scan_iter(match=self.binding_pattern, count=500))):
            exchange = key.decode(errors="replace")[len(self.binding_pattern) - 1 :]
            if exchange.startswith(INTERNAL_EXCHANGES):
                continue
            for member in self._call(self.client.smembers, key):
                parts = member.decode(errors="replace").split(self.sep)
                if len(parts) == 3 and parts[2]:
                    found.append((exchange, parts[0], parts[2]))
        return found

    def stats(self, queues):
        queues = list(queues)
        with self.client.pipeline(transaction=False) as pipe:
            for queue in queues:
                for step in self.priority_steps:
                    pipe.llen(self.level_key(queue, step))
                    pipe.lindex(self.level_key(queue, step), -1)
            replies = self._call(pipe.execute)
        bindings = self.bindings()
        in_flight, scheduled, capped = self.unacked_by_queue(bindings)
        bound = {queue for _e, _r, queue in bindings}
        result = {}
        per_queue = len(self.priority_steps) * 2
        for index, queue in enumerate(queues):
            chunk = replies[index * per_queue : (index + 1) * per_queue]
            depth_by_priority, oldest = {}, None
            for level, step in enumerate(self.priority_steps):
                length, tail = chunk[level * 2], chunk[level * 2 + 1]
                if length:
                    depth_by_priority[step] = length
                if tail is not None:
                    published = decode_virtual_envelope(tail).published_at
                    if published and (oldest is None or published < oldest):
                        oldest = published
            depth = sum(depth_by_priority.values())
            result[queue] = QueueStats(
                name=queue,
                depth=depth,
                depth_by_priority=depth_by_priority,
                in_flight=in_flight.get(queue, 0),
                scheduled=scheduled.get(queue, 0),
                oldest_published_at=oldest,
                exists_on_broker=bool(depth) or queue in bound or queue in in_flight,
                approximate=capped,
                note="in-flight counted from the first %d unacked messages" % UNACKED_SCAN_LIMIT if capped else "",
            )
        return result

    def unacked_by_queue(self, bindings):
        """({queue: count}, {queue: with an eta}, capped) from the unacked hash."""
        route = {(exchange, routing_key): queue for exchange, routing_key, queue in bindings}
        in_flight, scheduled, seen = {}, {}, 0
        for _tag, value in self.unacked_entries():
            seen += 1
            if seen > UNACKED_SCAN_LIMIT:
                return in_flight, scheduled, True
            exchange, routing_key, has_eta = unacked_route(value)
            queue = route.get((exchange, routing_key), routing_key)
            if not queue:
                continue
            in_flight[queue] = in_flight.get(queue, 0) + 1
            if has_eta:
                scheduled[queue] = scheduled.get(queue, 0) + 1
        return in_flight, scheduled, False

    def unacked_messages(self, queue, limit=1000):
        """Decoded messages of `queue` that workers hold (prefetched or waiting for their eta)."""
        route = {(exchange, routing_key): name for exchange, routing_key, name in self.bindings()}
        found = []
        for tag, value in self.unacked_entries():
            exchange, routing_key, _ = unacked_route(value)
            if route.get((exchange, routing_key), routing_key) != queue:
                continue
            try:
                envelope = json.dumps(json.loads(value)[0])
            except (ValueError, TypeError, IndexError):
                continue
            message = decode_virtual_envelope(envelope)
            message.delivery_tag = tag.decode(errors="replace")
            found.append(message)
            if len(found) >= limit:
                break
        return found

    def peek(self, queue, offset=0, limit=50):
        lengths = self._call(lambda: [self.client.llen(self.level_key(queue, step)) for step in self.priority_steps])
        messages, position = [], 0
        for step, length in zip(self.priority_steps, lengths, strict=True):
            if len(messages) >= limit:
                break
            if offset >= position + length:
                position += length
                continue
            start = max(offset - position, 0)  # counted from the tail, where workers take
            count = min(limit - len(messages), length - start)
            raw = self._call(self.client.lrange, self.level_key(queue, step), -(start + count), -(start + 1))
            for index, item in enumerate(reversed(raw)):
                message = decode_virtual_envelope(item)
                message.position = position + start + index
                message.priority = message.priority if message.priority is not None else step
                messages.append(message)
            position += length
        return messages

    def scan(self, queue, chunk=1000, decode=True, clean=False):
        """Every waiting message, level by level, read from the left (newest) end in chunks.

        Reading from the left never skips a message while workers pop from the right; a message
        pushed during the scan can make one already read appear a second time.
        """
        for step in self.priority_steps:
            key = self.level_key(queue, step)
            start = 0
            while True:
                raw = self._call(self.client.lrange, key, start, start + chunk - 1)
                if not raw:
                    break
                for item in raw:
                    yield decode_virtual_envelope(item, clean) if decode else item
                start += len(raw)

    def take(self, queue, matches, archive, confirm, batch=500, limit=None):
        """Level by level from the left (newest) end, as scan reads. Each batch is removed with
        LREM of its exact bytes, one occurrence each: only the archived messages go, wherever
        workers have moved the head meanwhile."""
        matched = 0
        for step in self.priority_steps:
            key = self.level_key(queue, step)
            start = 0
            while limit is None or matched < limit:
                raws = self._call(self.client.lrange, key, start, start + batch - 1)
                if not raws:
                    break
                chosen = []
                for raw in raws:
                    if limit is not None and matched + len(chosen) >= limit:
                        break
                    message = decode_virtual_envelope(raw)
                    if matches(message):
                        chosen.append(Taken(raw=raw, message=message, priority=step, locator=key))
                removed = 0
                if chosen:
                    archive(chosen)
                    counts = self._call(self._remove, key, chosen, start, len(raws))
                    for taken, count in zip(chosen, counts, strict=True):
                        taken.removed = count > 0
                        taken.note = "" if taken.removed else GONE
                        removed += taken.removed
                    confirm(chosen)
                    matched += len(chosen)
                # What was removed before `start + len(raws)` shifted the rest to the left.
                start += len(raws) - removed
        return matched

    def _remove(self, key, takens, start, window):
        """Remove exactly these messages, atomically (a Lua script): each is found in the window
        it was read from (widened, since messages pushed meanwhile shift it to the right) and
        overwritten with a tombstone, then one LREM drops the tombstones. LREM of each message's
        bytes alone would compare against every message before it — quadratic on a long queue.
        A message not in the window any more is looked for in the whole list. Returns 1 per
        message removed, 0 per message already gone."""
        tombstone = f"jobwatch-purge-tombstone-{uuid.uuid4()}"
        stop = start + window + WINDOW_SLACK
        result = self._remove_script(keys=[key], args=[start, stop, tombstone, *[taken.raw for taken in takens]])
        removed = {int(position) for position in result}
        return [1 if position in removed else 0 for position in range(len(takens))]

    @property
    def _remove_script(self):
        if self._script is None:
            self._script = self.client.register_script(REMOVE_EXACTLY)
        return self._script

    def put_back(self, queue, raw, priority=None):
        """Through kombu's own publish path (LPUSH onto the message's priority level), so the
        message lands where a worker will look for it."""
        channel = self.connection.default_channel
        try:
            channel._put(queue, json.loads(raw))
        except redis_client.RedisError as error:
            raise BrokerUnavailable(f"Redis broker: {error}") from error

    def unacked_entries(self):
        """(delivery tag, value) of the unacked hash, read lazily: callers stop at their cap."""
        try:
            yield from self.client.hscan_iter(self.unacked_key, count=1000)
        except redis_client.RedisError as error:
            raise BrokerUnavailable(f"Redis broker: {error}") from error

    def _call(self, operation, *args):
        try:
            return operation(*args)
        except redis_client.RedisError as error:
            raise BrokerUnavailable(f"Redis broker: {error}") from error


def unacked_route(value):
    """(exchange, routing_key, has_eta) of one `unacked` value: JSON [envelope, exchange, key]."""
    try:
        envelope, exchange, routing_key = json.loads(value)[:3]
    except (ValueError, TypeError):
        return None, None, False
    headers = envelope.get("headers") if isinstance(envelope, dict) else None
    has_eta = bool(headers.get("eta")) if isinstance(headers, dict) else False
    return exchange, routing_key, has_eta
