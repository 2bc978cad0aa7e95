"""Clustered jobs for tests/cluster/test_faults.py, declared on every host (SCHEDULING_JOB_MODULES): each run
writes down its tick and its times on the database's clock (the hosts' clocks may lie), so the test counts
executions per tick, not only run rows."""

import time

from django.db import connection

from scheduling import scheduled
from tests.scheduling.recorder import record_run

LONG_RUN_SECONDS = 9  # longer than two periods of its job: later ticks come while it runs


def database_now() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT clock_timestamp()")
        return cursor.fetchone()[0].isoformat()


@scheduled(every_seconds=3)
def every_three_seconds() -> None:
    record_run(started=database_now())


@scheduled(every_seconds=4)
def runs_nine_seconds() -> None:
    started = database_now()
    time.sleep(LONG_RUN_SECONDS)
    record_run(started=started, finished=database_now())
