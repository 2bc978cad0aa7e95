"""Leases on running work: a claim on a chunk (or a job's reduction) that its process must keep renewing.

A lease that is not renewed lapses, and maintenance hands the work to another worker; a renewal that
finds the lease gone marks it lost, and the step sees that as a cancel. A chunk lease is not renewed
once its job is cancelled.

A lease may carry a deadline (`BATCH_MAX_CHUNK_SECONDS`): a step that hangs while its process lives (a
blocked socket, a lock, a deadlock) would otherwise renew its lease forever. At the deadline the keeper
records the overrun (the chunk is ERRORED and retried elsewhere) and the lease is lost; a step that has
not returned a few seconds later cannot be stopped from inside, so the keeper recycles the process
(in a Celery pool process: SIGKILL, and the pool starts a fresh one).

The deadline is on silence, not on the whole run: a step that reports progress (`Lease.report_progress`, the
step's `context.report_progress()`) has its deadline start again from its last report, so a step that streams a
large input slowly but steadily is never taken as hung. The renewal after a report writes the database time of
it (`progress_at`), which the worker's main process reads to move its own deadline (`batch.recycling`).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from uuid import UUID

from django.db import connection

from batch import sql
from batch.conf import batch_settings
from batch.statuses import ChunkStatus

logger = logging.getLogger(__name__)


RECYCLE_GRACE_SECONDS = 3.0  # after an overrun, how long a step has to notice (it sees a cancel) and return


@dataclass(eq=False)
class Lease:
    """A claim on running work that must be renewed; `lost` turns true when a renewal finds it gone.

    `max_seconds`: past this without progress the work is taken as hung and `on_overrun` records it (once).
    """

    renew: Callable[[], bool]
    max_seconds: float | None = None
    on_overrun: Callable[[], object] | None = None
    lost: bool = False
    renew_at: float = 0.0  # time.monotonic() of the next renewal
    deadline: float = float("inf")  # time.monotonic() past which the work has overrun
    recycle_at: float = float("inf")  # time.monotonic() past which a still running overrun recycles the process
    progressed_at: float = float("-inf")  # time.monotonic() of the step's last report of progress
    progress_recorded_at: float = float("-inf")  # the last `progressed_at` a renewal wrote to the database

    def report_progress(self) -> None:
        """The work moved (a block read, a chunk emitted): its deadline starts again from now. Cheap (no lock, no
        query; the keeper reads it at the deadline and the next renewal records it), so call it per item."""
        self.progressed_at = time.monotonic()

    @property
    def progress_unrecorded(self) -> bool:
        return self.progressed_at > self.progress_recorded_at

    def next_event(self) -> float:
        return min(self.renew_at, self.deadline, self.recycle_at)


class LeaseKeeper:
    """One daemon thread per worker process renews the leases of the work running in that process."""

    def __init__(self) -> None:
        self._leases: set[Lease] = set()
        self._lock = threading.Lock()
        self._changed = threading.Event()
        self._thread: threading.Thread | None = None
        # What to do with a process whose step overran and would not return: set in Celery pool processes
        # (`batch.tasks`); elsewhere (tests, a shell) the overrun is only recorded and logged.
        self.recycle_process: Callable[[], None] | None = None

    @contextmanager
    def holding(self, lease: Lease) -> Iterator[Lease]:
        now = time.monotonic()
        lease.renew_at = now + batch_settings().lease_renewal_interval.total_seconds()
        if lease.max_seconds is not None:
            lease.deadline = now + lease.max_seconds
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
                next_event = min((lease.next_event() for lease in self._leases), default=None)
            self._changed.wait(None if next_event is None else max(0.0, next_event - time.monotonic()))
            self._changed.clear()
            now = time.monotonic()
            with self._lock:
                due = [lease for lease in self._leases if lease.next_event() <= now]
            for lease in due:
                try:
                    self._handle(lease, now)
                except Exception:
                    logger.exception("lease renewal failed; retrying at the next interval")
            if due:
                connection.close()  # a renewal every few seconds does not need to hold a connection in between

    def _handle(self, lease: Lease, now: float) -> None:
        if lease.recycle_at <= now:
            lease.recycle_at = float("inf")
            logger.error(
                "a step overran its maximum run time of %s s and did not stop: recycling this process",
                lease.max_seconds,
            )
            if self.recycle_process is not None:
                self.recycle_process()
            return
        if (
            lease.deadline <= now
            and lease.max_seconds is not None
            and not lease.lost
            and lease.progressed_at + lease.max_seconds > now
        ):
            # It progressed since: not hung. The new deadline counts from its last report, and the progress is
            # recorded at once, so the main process's watchdog (which reads it) moves its deadline in time.
            lease.deadline = lease.progressed_at + lease.max_seconds
            lease.renew_at = now + batch_settings().lease_renewal_interval.total_seconds()
            if not lease.renew():
                lease.lost = True
            return
        if lease.deadline <= now:
            lease.deadline = float("inf")
            lease.recycle_at = now + RECYCLE_GRACE_SECONDS
            try:
                if lease.on_overrun is not None:
                    lease.on_overrun()  # recorded before the step learns of it, so its retry is already announced
            finally:
                lease.lost = True  # the step sees a cancel from now on; its outcome will not count
            return
        if lease.renew_at <= now:
            lease.renew_at = now + batch_settings().lease_renewal_interval.total_seconds()
            if not lease.lost and not lease.renew():
                lease.lost = True


lease_keeper = LeaseKeeper()


def chunk_lease(
    chunk_id: UUID, claim_token: UUID, max_seconds: float | None = None, on_overrun: Callable[[], object] | None = None
) -> Lease:
    def renew() -> bool:
        progressed_at = lease.progressed_at
        progressed = lease.progress_unrecorded
        with connection.cursor() as cursor:
            cursor.execute(
                sql.RENEW_CHUNK_LEASE,
                [batch_settings().lease, progressed, chunk_id, ChunkStatus.IN_PROGRESS, claim_token],
            )
            renewed = cursor.rowcount == 1
        if renewed and progressed:
            lease.progress_recorded_at = progressed_at
        return renewed

    lease = Lease(renew, max_seconds=max_seconds, on_overrun=on_overrun)
    return lease


def kill_this_process() -> None:
    """Recycle a Celery pool process: SIGKILL; the pool replaces it and re-queues its message (acks_late)."""
    os.kill(os.getpid(), signal.SIGKILL)
