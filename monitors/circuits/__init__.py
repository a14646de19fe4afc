"""A circuit breaker for jobs whose state every worker process and machine shares.

    from monitors.circuits import circuit

    payment_gateway = circuit("payment-gateway", fail_max=5, reset_timeout=30)

    with payment_gateway:
        charge(...)

See breaker.py for the behaviour, machine.py for the states and options, stores.py for where the
state lives, and waiting.py for how a job waits on an open circuit.
"""

from monitors.circuits.breaker import CircuitBreaker
from monitors.circuits.machine import Policy
from monitors.circuits.registry import circuit
from monitors.circuits.stores import shared_store
from monitors.circuits.waiting import CircuitOpenError

__all__ = ["CircuitBreaker", "CircuitOpenError", "Policy", "circuit", "shared_store"]
