import pytest

from tests.processes import Process


@pytest.fixture
def processes():
    """Collects processes a test starts and stops them all when it ends, whatever happened."""
    started: list[Process] = []
    yield started
    for process in reversed(started):
        process.stop()
