import pytest

from monitors.recording import signals


@pytest.fixture
def flush_recorder():
    """Write what this process has buffered, now (from the calling thread's connection)."""

    def flush():
        assert signals.get_writer().flush(), signals.get_writer().counters.last_error

    return flush
