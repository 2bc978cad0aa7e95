from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest

from tests.processes import Process, stop_all

if TYPE_CHECKING:  # batch's modules need Django set up, which happens after this file is read
    from batch.api import JobDefinition
    from batch.testing import InProcessBus


@pytest.fixture
def processes():
    """Collects processes a test starts and stops them all when it ends, whatever happened."""
    started: list[Process] = []
    yield started
    stop_all(started)


@pytest.fixture
def bus() -> Iterator[InProcessBus]:
    """Work messages stay here until the test delivers them, in this process (no Celery, no Redis)."""
    from batch.testing import in_process_bus

    with in_process_bus() as in_process:
        yield in_process


@pytest.fixture
def define_job() -> Iterator[Callable[..., JobDefinition]]:
    """`define_job(lambda b: b.first_step(...).last_step(...))` builds and registers a uniquely named job."""
    from batch.testing import throwaway_jobs

    with throwaway_jobs() as define:
        yield define
