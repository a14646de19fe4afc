"""Reading Celery's queues on RabbitMQ.

Counts come from the management HTTP API when it answers (one request for every queue, with
unacknowledged messages and consumers), otherwise from a passive queue.declare per queue over
AMQP, which changes nothing. RabbitMQ has no way to look at a message without taking it:
the management API's "get" with requeue takes messages and puts them back, marked redelivered,
so peek says so first, and without the management API Jobwatch does not peek at all.
"""

import base64
import json
import urllib.error
import urllib.parse
import urllib.request

from kombu import Producer

from monitors.brokers.base import Batches, BrokerAdapter, BrokerUnavailable, PeekUnavailable, QueueStats, Taken
from monitors.brokers.decoding import decode_body
from monitors.conf import setting

INTERNAL_PREFIXES = ("celeryev.", "amq.gen-")
INTERNAL_SUFFIXES = (".pidbox",)
PEEK_WARNING = (
    "RabbitMQ cannot show a message without taking it. Peeking takes the first messages and puts "
    "them straight back (requeue): they are flagged redelivered, a worker may receive them in the "
    "meantime, and with several consumers their order can change."
)

# A purge on RabbitMQ has to take messages to look at them (basic.get) and holds those it keeps
# until it ends; say so before doing it.
PURGE_WARNING = (
    "RabbitMQ cannot remove a chosen message in place: the purge takes every message of the queue in "
    "turn, archives and acknowledges the ones that match, and returns the others to the queue when it "
    "ends. Until then workers do not get those others; afterwards they are flagged redelivered."
)


class ManagementAPI:
    def __init__(self, base_url, timeout=5.0):
        parts = urllib.parse.urlsplit(base_url)
        self.base = f"{parts.scheme}://{parts.hostname}:{parts.port or 15672}{parts.path.rstrip('/')}"
        if not self.base.endswith("/api"):
            self.base += "/api"
        credentials = f"{urllib.parse.unquote(parts.username or 'guest')}:{urllib.parse.unquote(parts.password or 'guest')}"
        self.authorization = "Basic " + base64.b64encode(credentials.encode()).decode()
        self.timeout = timeout

    def request(self, path, payload=None):
        data = json.dumps(payload).encode() if payload is not None else None
        request = urllib.request.Request(
            self.base + path, data=data, method="POST" if data else "GET",
            headers={"Authorization": self.authorization, "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.load(response)
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return None
            raise BrokerUnavailable(f"RabbitMQ management API {path}: HTTP {error.code}") from error
        except (OSError, ValueError) as error:
            raise BrokerUnavailable(f"RabbitMQ management API unreachable: {error}") from error


class RabbitMQBroker(BrokerAdapter):
    kind = "rabbitmq"

    def __init__(self, app):
        self.connection = app.connection_for_read()
        try:
            self.connection.ensure_connection(max_retries=1)
        except Exception as error:
            self.connection.release()
            raise BrokerUnavailable(f"RabbitMQ broker unreachable: {error}") from error
        self.vhost = self.connection.virtual_host or "/"
        self.management = self.find_management_api()
        self.peek_warning = PEEK_WARNING if self.management else ""

    def find_management_api(self):
        configured = setting("RABBITMQ_MANAGEMENT_URL")
        if configured == "":
            return None
        if configured is None:  # same host and credentials as the broker, the plugin's port
            user = urllib.parse.quote(self.connection.userid or "guest", safe="")
            password = urllib.parse.quote(self.connection.password or "guest", safe="")
            configured = f"http://{user}:{password}@{self.connection.hostname or 'localhost'}:15672"
        api = ManagementAPI(configured)
        try:
            api.request("/overview")
        except BrokerUnavailable:
            return None
        return api

    def close(self):
        self.connection.release()

    def vhost_path(self):
        return urllib.parse.quote(self.vhost, safe="")

    def queue_names(self):
        if self.management is None:
            return set()  # AMQP cannot list queues; discovery falls back to routes and history
        rows = self.management.request(f"/queues/{self.vhost_path()}?columns=name") or []
        return {row["name"] for row in rows if not is_internal(row.get("name", ""))}

    def stats(self, queues):
        if self.management is not None:
            return self.stats_from_management(queues)
        return {queue: self.stats_from_declare(queue) for queue in queues}

    def stats_from_management(self, queues):
        columns = "name,messages_ready,messages_unacknowledged,consumers,arguments"
        rows = self.management.request(f"/queues/{self.vhost_path()}?columns={columns}") or []
        by_name = {row.get("name"): row for row in rows}
        result = {}
        for queue in queues:
            row = by_name.get(queue)
            if row is None:
                result[queue] = QueueStats(name=queue, depth=0, in_flight=0, consumers=0, exists_on_broker=False)
                continue
            result[queue] = QueueStats(
                name=queue,
                depth=row.get("messages_ready") or 0,
                in_flight=row.get("messages_unacknowledged") or 0,
                consumers=row.get("consumers") or 0,
                # The management API refreshes its counts every few seconds.
                approximate=True,
                note=priority_note(row.get("arguments") or {}),
            )
        return result

    def stats_from_declare(self, queue):
        channel = self.connection.channel()
        try:
            _name, depth, consumers = channel.queue_declare(queue=queue, passive=True)
            return QueueStats(name=queue, depth=depth, consumers=consumers, note="in-flight needs the management API")
        except Exception as error:
            if getattr(error, "code", None) == 404:
                return QueueStats(name=queue, depth=0, consumers=0, exists_on_broker=False)
            raise BrokerUnavailable(f"RabbitMQ: {error}") from error
        finally:
            try:
                channel.close()
            except Exception:
                pass  # a 404 already closed it

    def peek(self, queue, offset=0, limit=50):
        if self.management is None:
            raise PeekUnavailable(
                "Peeking on RabbitMQ needs the management plugin (rabbitmq-plugins enable rabbitmq_management); "
                "without it Jobwatch will not take messages off the queue."
            )
        wanted = {"count": offset + limit, "ackmode": "ack_requeue_true", "encoding": "auto", "truncate": 16 * 1024 * 1024}
        rows = self.management.request(f"/queues/{self.vhost_path()}/{urllib.parse.quote(queue, safe='')}/get", wanted) or []
        messages = []
        for position, row in enumerate(rows[offset:], start=offset):
            message = decode_management_message(row)
            message.position = position
            messages.append(message)
        return messages

    def scan(self, queue, chunk=1000, decode=True, clean=False):
        raise PeekUnavailable("A full scan on RabbitMQ would redeliver every message; Jobwatch does not do it.")

    purge_warning = PURGE_WARNING

    def take(self, queue, matches, archive, confirm, batch=500, limit=None):
        return take_messages(self, queue, matches, archive, confirm, batch, limit)

    def put_back(self, queue, raw, priority=None):
        put_back_message(self, queue, raw)


# The properties a message keeps through archive and restore.
KEPT_PROPERTIES = ("content_type", "content_encoding", "priority", "delivery_mode", "correlation_id", "reply_to",
                   "expiration", "message_id", "timestamp", "type", "user_id", "app_id")


def take_messages(adapter, queue, matches, archive, confirm, batch=500, limit=None):
    """basic.get every message with manual acknowledgement: matches are archived, then acked;
    the rest stay unacknowledged on this channel and go back to the queue (to their places,
    for a classic queue) when it closes — also if this process dies midway, which puts back
    whatever was not yet acked, archived or not."""
    connection = adapter.connection.clone()
    try:
        channel = connection.channel()

        def remove(taken):
            channel.basic_ack(taken.locator)
            taken.removed = True

        batches = Batches(archive, confirm, remove, batch)
        while limit is None or batches.matched < limit:
            message = channel.basic_get(queue, no_ack=False)
            if message is None:
                break
            body = message.body if isinstance(message.body, bytes) else str(message.body).encode()
            properties = dict(message.properties or {})
            decoded = decode_body(body, content_type=message.content_type, content_encoding=message.content_encoding,
                                  headers=message.headers, properties=properties, size=len(body),
                                  redelivered=message.delivery_info.get("redelivered", False))
            if matches(decoded):
                batches.add(Taken(raw=envelope_of(body, message, properties), message=decoded,
                                  priority=properties.get("priority"), locator=message.delivery_tag))
        batches.flush()
    except Exception as error:
        if isinstance(error, (OSError, ConnectionError)) or type(error).__module__.startswith(("amqp", "kombu")):
            raise BrokerUnavailable(f"RabbitMQ broker: {error}") from error
        raise
    finally:
        connection.release()  # closing the channel returns every unacknowledged message
    return batches.matched


def envelope_of(body, message, properties):
    """What the archive keeps of an AMQP message: its body (base64) and what a restore needs to
    publish it the same way."""
    kept = {name: properties[name] for name in KEPT_PROPERTIES if properties.get(name) is not None}
    return json.dumps({
        "body": base64.b64encode(body).decode(),
        "headers": message.headers or {},
        "properties": kept,
        "exchange": message.delivery_info.get("exchange", ""),
        "routing_key": message.delivery_info.get("routing_key", ""),
    }, default=str).encode()


def put_back_message(adapter, queue, raw):
    envelope = json.loads(raw)
    properties = dict(envelope.get("properties") or {})
    body = base64.b64decode(envelope["body"])
    connection = adapter.connection.clone()
    try:
        producer = Producer(connection.default_channel)
        producer.publish(
            body, routing_key=queue, exchange="", headers=envelope.get("headers") or {},
            content_type=properties.pop("content_type", "application/json"),
            content_encoding=properties.pop("content_encoding", "utf-8"),
            retry=True, retry_policy={"max_retries": 3}, **properties,
        )
    except (OSError, ConnectionError) as error:
        raise BrokerUnavailable(f"RabbitMQ broker: {error}") from error
    finally:
        connection.release()


def decode_management_message(row):
    properties = row.get("properties") or {}
    payload = row.get("payload") or ""
    body = base64.b64decode(payload) if row.get("payload_encoding") == "base64" else payload.encode()
    return decode_body(
        body,
        content_type=properties.get("content_type"),
        content_encoding=properties.get("content_encoding"),
        headers=properties.get("headers"),
        properties=properties,
        size=row.get("payload_bytes", len(body)),
        redelivered=row.get("redelivered", False),
    )


def is_internal(name):
    return name.startswith(INTERNAL_PREFIXES) or name.endswith(INTERNAL_SUFFIXES) or "reply.celery.pidbox" in name


def priority_note(arguments):
    top = arguments.get("x-max-priority")
    return f"priority queue (0–{top}); RabbitMQ does not count per level" if top else ""
