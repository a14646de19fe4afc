"""Broker adapters: one per transport, behind monitors.brokers.base.BrokerAdapter."""

from urllib.parse import urlsplit

from celery import current_app

from monitors.brokers.base import BrokerAdapter, BrokerUnavailable, PeekUnavailable, QueueStats

__all__ = ["BrokerAdapter", "BrokerUnavailable", "PeekUnavailable", "QueueStats", "open_broker", "broker_kind"]

KINDS = {
    "redis": "redis", "rediss": "redis", "sentinel": "redis",
    "amqp": "rabbitmq", "amqps": "rabbitmq", "pyamqp": "rabbitmq",
    "filesystem": "filesystem",
}


def broker_kind(app):
    url = app.conf.broker_url or ""
    first = url.split(";")[0]  # failover lists: the first broker is the one in use
    return KINDS.get(urlsplit(first).scheme, "")


def open_broker(app=None):
    """The adapter for the Celery app's own broker (app: the current app by default)."""
    app = app or current_app
    kind = broker_kind(app)
    # Each adapter is imported when used: it needs its transport's client library (redis, for one),
    # which a site on another broker need not have installed.
    if kind == "redis":
        from monitors.brokers.redis import RedisBroker

        return RedisBroker(app)
    if kind == "rabbitmq":
        from monitors.brokers.rabbitmq import RabbitMQBroker  # as above

        return RabbitMQBroker(app)
    if kind == "filesystem":
        from monitors.brokers.filesystem import FilesystemBroker  # as above

        return FilesystemBroker(app)
    raise BrokerUnavailable(f"Jobwatch cannot read queues on this broker: {app.conf.broker_url!r}")
