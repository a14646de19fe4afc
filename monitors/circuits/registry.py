"""The process's breakers by name (the shared store they use is chosen in stores.py)."""

import threading

from monitors.circuits.breaker import CircuitBreaker

_breakers = {}
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
