"""Loaded into real processes with SCHEDULING_JOB_MODULES: a clustered job every 2 s and a local one every 1 s."""

from scheduling import scheduled
from tests.scheduling.recorder import record_run


@scheduled(every_seconds=2)
def clustered_every_two_seconds() -> None:
    record_run()


@scheduled(every_seconds=1, clustered=False)
def local_every_second() -> None:
    record_run()
