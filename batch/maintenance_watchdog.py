"""The safety net's safety net: batch workers run maintenance themselves when the scheduled pass is starved.

Maintenance is a clustered scheduled job, run by the scheduler workers. If those are all busy with long
user scheduled jobs (or down), no lease would expire, no lost message be re-sent, no gate be opened by
maintenance. So every batch worker (its main process) checks, every maintenance interval, when the last
pass ended; past three intervals it runs one itself. The pass's lease keeps it one at a time.
"""

from __future__ import annotations

import logging
import threading

from django.db import connection

from batch import sql
from batch.conf import batch_settings
from batch.maintenance import run_maintenance_pass

logger = logging.getLogger(__name__)

OVERDUE_AFTER_INTERVALS = 3


def maintenance_is_overdue() -> bool:
    """No pass ended within the last three maintenance intervals (by the database's clock)."""
    with connection.cursor() as cursor:
        cursor.execute(sql.MAINTENANCE_OVERDUE, [batch_settings().maintenance_interval * OVERDUE_AFTER_INTERVALS])
        return cursor.fetchone()[0]


def check_once() -> bool:
    """Run a pass if maintenance is overdue; True if one ran."""
    if not maintenance_is_overdue():
        return False
    logger.warning("no maintenance pass for %s intervals: this worker runs one", OVERDUE_AFTER_INTERVALS)
    return run_maintenance_pass().ran


def start_watchdog() -> threading.Thread:
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(batch_settings().maintenance_interval.total_seconds()):
            try:
                check_once()
            except Exception:  # the database away, say: try again next interval
                logger.exception("maintenance watchdog: check failed; retrying next interval")
            finally:
                connection.close()

    thread = threading.Thread(target=watch, name="batch-maintenance-watchdog", daemon=True)
    thread.start()
    return thread
