"""Leases on running work: a claim on a chunk (or a job's reduction) that its process must keep renewing.

A lease that is not renewed lapses, and maintenance hands the work to another worker; a renewal that
finds the lease gone marks it lost, and the step sees that as a cancel.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from uuid import UUID

from django.db import connection
from django.utils import timezone

from batch.conf import batch_settings
from batch.statuses import ChunkStatus
from batch.transitions import change_owned_chunk_status

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class Lease:
    """A claim on running work that must be renewed; `lost` turns true when a renewal finds it gone."""

    renew: Callable[[], bool]
    lost: bool = False
    renew_at: float = 0.0  # time.monotonic() of the next renewal


class LeaseKeeper:
    """One daemon thread per worker process renews the leases of the work running in that process."""

    def __init__(self) -> None:
        self._leases: set[Lease] = set()
        self._lock = threading.Lock()
        self._changed = threading.Event()
        self._thread: threading.Thread | None = None

    @contextmanager
    def holding(self, lease: Lease) -> Iterator[Lease]:
        lease.renew_at = time.monotonic() + batch_settings().lease_renewal_interval.total_seconds()
        with self._lock:
            if self._thread is None or not self._thread.is_alive():  # not alive: this is a forked child
                self._thread = threading.Thread(target=self._run, name="batch-lease-keeper", daemon=True)
                self._thread.start()
            self._leases.add(lease)
        self._changed.set()
        try:
            yield lease
        finally:
            with self._lock:
                self._leases.discard(lease)

    def _run(self) -> None:
        while True:
            with self._lock:
                next_renewal = min((lease.renew_at for lease in self._leases), default=None)
            self._changed.wait(None if next_renewal is None else max(0.0, next_renewal - time.monotonic()))
            self._changed.clear()
            now = time.monotonic()
            with self._lock:
                due = [lease for lease in self._leases if lease.renew_at <= now]
            for lease in due:
                lease.renew_at = now + batch_settings().lease_renewal_interval.total_seconds()
                try:
                    if not lease.renew():
                        lease.lost = True
                except Exception:
                    logger.exception("lease renewal failed; retrying at the next interval")
            if due:
                connection.close()  # a renewal every few seconds does not need to hold a connection in between


lease_keeper = LeaseKeeper()


def _lease_deadline():
    return timezone.now() + batch_settings().lease


def chunk_lease(chunk_id: UUID, attempt: int) -> Lease:
    return Lease(lambda: change_owned_chunk_status(chunk_id, attempt, ChunkStatus.IN_PROGRESS,
                                                   lease_expires_at=_lease_deadline()))
