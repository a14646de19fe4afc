import pytest
from hypothesis import HealthCheck, settings

# The suite shares two cores with real workers and servers: how fast hypothesis draws its inputs
# says nothing about the code under test, and a slow draw must not fail a run.
settings.register_profile("jobwatch", suppress_health_check=[HealthCheck.too_slow], deadline=None)
settings.load_profile("jobwatch")

from monitors.circuits.stores import close_connections
from monitors.recording import signals


@pytest.fixture(scope="session", autouse=True)
def close_circuit_connections(django_db_setup):
    """Circuit stores keep connections of their own; the test databases cannot be dropped while
    they are open."""
    yield
    close_connections()


@pytest.fixture
def flush_recorder():
    """Write what this process has buffered, now (from the calling thread's connection)."""

    def flush():
        assert signals.get_writer().flush(), signals.get_writer().counters.last_error

    return flush
