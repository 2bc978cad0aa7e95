"""One maintenance pass at a time in the cluster, by a lease that lapses on the database's clock.

A session-level advisory lock lives as long as its holder's backend. A host that powers off (or a process
that freezes) while holding one leaves its backend alive in PostgreSQL until TCP gives up, hours with
Linux's defaults: no pass ran anywhere meanwhile. The lease is a row with an expiry instead: a pass takes
it when it is free or expired, renews it as it goes, and gives it back at the end. A holder that stopped
renewing loses it after `BATCH_MAINTENANCE_LEASE_SECONDS`, on `now()`, whatever became of its host. A
holder that wakes after its lease was taken finds its renewal refused and stops; two passes overlapping
for a moment would corrupt nothing anyway (every change inside is a conditional update).
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from django.db import DatabaseError, connection

from batch import sql
from batch.conf import batch_settings

logger = logging.getLogger(__name__)


class LeaseLost(Exception):
    """This pass no longer holds the maintenance lease (it stalled past its expiry and another took it)."""


class MaintenanceLease:
    """The lease of one pass: `renew()` between pieces of work raises `LeaseLost` once it is gone."""

    def __init__(self) -> None:
        self.token = uuid.uuid4()
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{self.token.hex[:8]}"

    def take(self) -> bool:
        """True when this pass holds the lease now (it was free, given back or lapsed)."""
        with connection.cursor() as cursor:
            cursor.execute(sql.LAPSED_MAINTENANCE_LEASE)
            lapsed = cursor.fetchone()
            cursor.execute(
                sql.TAKE_MAINTENANCE_LEASE,
                {"holder": self.holder, "token": self.token, "lease": batch_settings().maintenance_lease},
            )
            taken = cursor.fetchone() is not None
        if taken and lapsed is not None:
            logger.warning(
                "maintenance pass %s let its lease lapse %.1f s ago without giving it back (its host "
                "died, froze or lost the database); %s takes over",
                lapsed[0],
                lapsed[1],
                self.holder,
            )
        return taken

    def renew(self) -> None:
        """Extend the lease from now; `LeaseLost` when it lapsed meanwhile (even if nobody took it: a pass
        that stalled that long has been presumed dead, and another may be starting)."""
        with connection.cursor() as cursor:
            cursor.execute(
                sql.RENEW_MAINTENANCE_LEASE, {"token": self.token, "lease": batch_settings().maintenance_lease}
            )
            renewed = cursor.rowcount == 1
        if not renewed:
            raise LeaseLost(
                f"maintenance pass {self.holder} stalled past its lease "
                f"(BATCH_MAINTENANCE_LEASE_SECONDS); it stops here"
            )

    def release(self) -> None:
        with connection.cursor() as cursor:
            cursor.execute(sql.RELEASE_MAINTENANCE_LEASE, {"token": self.token})


@contextmanager
def maintenance_lease() -> Iterator[MaintenanceLease | None]:
    """The lease for one pass, or None when another live pass holds it. Given back at the end of the block
    (best effort: if that fails, it lapses by itself)."""
    lease = MaintenanceLease()
    if not lease.take():
        yield None
        return
    try:
        yield lease
    finally:
        try:
            lease.release()
        except DatabaseError as error:  # the database away: the lease lapses by itself
            logger.warning(
                "maintenance pass %s could not give its lease back (%s); it lapses by itself", lease.holder, error
            )
