"""Surviving a PostgreSQL restart: a lost connection is dropped and the operation waits for the database.

A worker keeps its connection across tasks (reconnecting per chunk would cost a round trip each), so
after a PostgreSQL restart or failover every process holds a dead connection. The first statement on
it fails; without care the failure is charged to the chunk, or worse, the dead connection stays and
every later task fails on it. Here the engine's own statements (claims, outcomes, reductions) drop the
dead connection and run again once the database answers, so a job in flight simply continues.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

import psycopg
from django.db import DatabaseError, connection, connections

logger = logging.getLogger(__name__)

T = TypeVar("T")
RECONNECT_DELAYS = (0.0, 0.5, 1.0, 2.0, 5.0)  # seconds between attempts; the last repeats
OUTAGE_PATIENCE_SECONDS = 600.0  # past this the error propagates (the task fails, maintenance recovers later)


def connection_is_lost(alias: str = "default") -> bool:
    """True when the alias has no live connection: never opened, closed, or broken by the server going away."""
    raw = connections[alias].connection
    return raw is None or raw.closed or raw.broken


def is_connection_loss(error: BaseException) -> bool:
    """A database error caused by the connection going away, as opposed to one the statement itself caused."""
    return isinstance(error, (DatabaseError, psycopg.Error)) and connection_is_lost()


def surviving_connection_loss(operation: Callable[[], T], what: str) -> T:
    """Run `operation`; when the connection is lost, drop it and run the operation again once the database answers.

    Only for operations that are safe to run twice (the engine's are conditional updates: a second run
    changes nothing) and that are not inside a transaction (a transaction's work is gone with its connection).
    """
    started = time.monotonic()
    attempt = 0
    while True:
        try:
            return operation()
        except (DatabaseError, psycopg.Error) as error:
            if connection.in_atomic_block or not is_connection_loss(error):
                raise
            connection.close()
            if time.monotonic() - started > OUTAGE_PATIENCE_SECONDS:
                raise
            delay = RECONNECT_DELAYS[min(attempt, len(RECONNECT_DELAYS) - 1)]
            if attempt == 0:
                logger.warning(
                    "%s: the database connection was lost (%s); waiting for the database",
                    what,
                    str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__,
                )
            attempt += 1
            time.sleep(delay)
