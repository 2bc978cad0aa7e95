"""Loaded into real processes on hosts with wrong clocks: a clustered job every 5 s, and one every 5 s that runs
12 s (so it heartbeats while later ticks come). Times are recorded on the database's clock: the hosts' lie."""

import time

from scheduling import scheduled
from scheduling.clock import database_now
from tests.scheduling.recorder import record_run

LONG_RUN_SECONDS = 12


@scheduled(every_seconds=5)
def every_five_seconds() -> None:
    record_run(started=database_now().isoformat())


@scheduled(every_seconds=5)
def runs_twelve_seconds() -> None:
    started = database_now().isoformat()
    time.sleep(LONG_RUN_SECONDS)
    record_run(started=started, finished=database_now().isoformat())
