"""Loaded into real processes: a clustered job every 2 s that takes 3 s, so each run outlives the next tick."""

import time

from scheduling import scheduled
from tests.scheduling.recorder import record_run

RUN_SECONDS = 3


@scheduled(every_seconds=2)
def clustered_slow() -> None:
    started = time.time()
    time.sleep(RUN_SECONDS)
    record_run(started=started, finished=time.time())
