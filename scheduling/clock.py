"""The database's clock, the one clock every scheduling decision is made on.

Host clocks drift apart (a machine 45 s ahead made another's ticks look stale and its running jobs look
dead); PostgreSQL's clock is one for the whole cluster. A decision taken in SQL uses `now()` directly. Beat
needs the time between queries, on every loop, so it keeps the offset between its host's clock and the
database's, measured again every `REMEASURE_EVERY` seconds (a query per ten seconds, not one per entry).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from django.db import DatabaseError, connection

logger = logging.getLogger(__name__)

REMEASURE_EVERY = 10.0  # seconds between measurements of the host's offset from the database's clock
SKEW_WORTH_A_WARNING = timedelta(seconds=2)  # a host further off than this is named in the log


def database_now() -> datetime:
    """The database's current time (`clock_timestamp()`: not frozen at the start of a transaction)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT clock_timestamp()")
        return cursor.fetchone()[0]


class DatabaseClock:
    """The database's time, read off the host's clock plus their measured offset.

    The offset is the database's time minus the midpoint of the host's times around the query, so it is
    off by at most half a round trip. When the database cannot be reached, the last offset stays in use
    (and the host's clock as is, before any measurement).
    """

    def __init__(self, host_now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._host_now = host_now
        self._offset = timedelta(0)
        self._measured_at: float | None = None  # time.monotonic() of the last measurement
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            if self._measured_at is None or time.monotonic() - self._measured_at >= REMEASURE_EVERY:
                self._measure()
            return self._host_now() + self._offset

    @property
    def offset(self) -> timedelta:
        """How far the database's clock is ahead of this host's (negative: behind)."""
        return self._offset

    def _measure(self) -> None:
        self._measured_at = time.monotonic()
        before = self._host_now()
        try:
            database = database_now()
        except DatabaseError as error:
            connection.close()  # a broken connection is not reused: the next measurement opens a new one
            logger.warning(
                "cannot read the database's clock (%s); keeping an offset of %.3f s",
                error,
                self._offset.total_seconds(),
            )
            return
        after = self._host_now()
        offset = database - (before + (after - before) / 2)
        if abs(offset - self._offset) > SKEW_WORTH_A_WARNING:
            logger.warning(
                "this host's clock is %.1f s %s the database's; scheduling goes by the database's",
                abs(offset.total_seconds()),
                "behind" if offset > timedelta(0) else "ahead of",
            )
        self._offset = offset


database_clock = DatabaseClock()
