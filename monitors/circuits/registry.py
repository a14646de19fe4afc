"""The process's breakers by name, and the shared store they use (from settings)."""

import threading

from monitors.circuits.breaker import CircuitBreaker
from monitors.circuits.stores import DatabaseStore, RedisStore

_breakers = {}
_stores = {}
_lock = threading.Lock()


def circuit(name, **options):
    """The breaker for service `name`. Every call with the same name returns the same breaker;
    asking for it again with different options is a mistake (one service, one policy)."""
    with _lock:
        breaker = _breakers.get(name)
        if breaker is None:
            breaker = _breakers[name] = CircuitBreaker(name, **options)
        elif options and _options(breaker) != options:
            raise ValueError(f"circuit {name!r} is already defined with other options: {_options(breaker)}")
        return breaker


def _options(breaker):
    options = dict(breaker.code_policy)
    if breaker.exclude:
        options["exclude"] = breaker.exclude
    if not breaker.wait_in_tasks:
        options["wait_in_tasks"] = False
    return options


def shared_store():
    """The store named by JOBWATCH["CIRCUIT_STORE"]: "database" (the default database, or
    "database:<alias>") or a redis:// URL. One per process and setting."""
    from monitors.conf import setting

    where = setting("CIRCUIT_STORE")
    with _lock:
        store = _stores.get(where)
        if store is None:
            store = _stores[where] = make_store(where)
        return store


def make_store(where):
    if where.startswith(("redis://", "rediss://", "unix://")):
        return RedisStore(where, mirror=DatabaseStore())
    if where == "database" or where.startswith("database:"):
        _, _, alias = where.partition(":")
        return DatabaseStore(alias or "default")
    raise ValueError(f'JOBWATCH["CIRCUIT_STORE"] must be "database", "database:<alias>" or a redis:// URL, not {where!r}')
