"""Recycling a pool process whose step overran, from outside it: the worker's main process watches.

The lease keeper (`batch.leases`) is a thread inside the process running the step: when the step holds the
GIL and does not let go (a catastrophic regular expression in C, a long C call), the keeper neither renews
the lease nor fires the overrun, and the process spins at 100 % for as long as the step does. So the Celery
main process, which runs no steps (prefork pool), watches its pool processes' chunks in the database:

- every POLL_SECONDS it reads the IN_PROGRESS chunks claimed by its own pool processes (`worker` is
  `<hostname>/<pid>`, written by the claim), with the database's clock;
- a claim (chunk id and claim token) seen for the first time at database time T has its deadline at
  T + the definition's maximum run time (`max_chunk_seconds`, else BATCH_MAX_CHUNK_SECONDS); the claim
  happened at most one poll before T; a step that reports progress moves it to its last recorded progress
  (`progress_at`, written by the lease renewal) + that maximum;
- past the deadline and a grace (`RECYCLE_GRACE_SECONDS`, the keeper's own chance to record the overrun and
  recycle its process when it can run), a claim still IN_PROGRESS with the same token is recorded as an
  overrun (ERRORED and announced for its retry, fenced by the token like every outcome) and its process is
  SIGKILLed; the pool starts a fresh one and the retry runs there or on another worker.

So a step that wedges its process is recycled within its maximum run time + the grace + a poll (a few
seconds), and its chunk retried, whether or not it holds the GIL.

Not covered: `--pool threads` and `--pool solo` run steps in the main process itself (a GIL-holding step
stops this watchdog too, and the process cannot be killed without the worker); their hung steps are
recorded by the keeper only while it can run, and the chunk's lease lapses otherwise (maintenance retries it
elsewhere), but the thread is never stopped. Reductions hold no chunk row: a wedged reduction lapses its
lease and maintenance starts another attempt, without the process being recycled.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from uuid import UUID

from django.db import connection

from batch import sql
from batch.conf import batch_settings
from batch.exceptions import UnknownJobDefinition
from batch.maintenance import held_claim
from batch.models import WorkChunk
from batch.registry import registry
from batch.statuses import ChunkStatus
from batch.worker import on_chunk_errored

logger = logging.getLogger(__name__)

POLL_SECONDS = 1.0  # one indexed query a second per worker: only IN_PROGRESS chunks are in the index read
RECYCLE_GRACE_SECONDS = 3.0  # as the keeper's own grace: it records and recycles first when it can run


@dataclass(frozen=True)
class HeldChunk:
    chunk_id: UUID
    claim_token: UUID
    pid: int
    deadline: datetime  # database time past which the claim has overrun (grace not included), moved by progress


class PoolWatchdog:
    """Remembers when each claim of this worker's pool processes was first seen, and recycles overruns."""

    def __init__(self, hostname: str, main_pid: int) -> None:
        self.hostname = hostname
        self.main_pid = main_pid
        self._first_seen: dict[tuple[UUID, UUID], HeldChunk] = {}

    def check_once(self) -> list[HeldChunk]:
        """One look at the database; returns the claims recycled."""
        with connection.cursor() as cursor:
            cursor.execute(sql.HELD_CHUNKS, [ChunkStatus.IN_PROGRESS, _like_prefix(self.hostname)])
            rows = cursor.fetchall()
        now = rows[0][6] if rows else None
        held: dict[tuple[UUID, UUID], HeldChunk] = {}
        for chunk_id, claim_token, worker, definition_id, version, progress_at, db_now in rows:
            pid = _pid_of(worker)
            if pid is None:
                continue
            key = (chunk_id, claim_token)
            max_run = timedelta(seconds=_max_seconds(definition_id, version))
            seen = self._first_seen.get(key) or HeldChunk(chunk_id, claim_token, pid, db_now + max_run)
            if progress_at is not None and progress_at + max_run > seen.deadline:
                seen = replace(seen, deadline=progress_at + max_run)  # it progressed: the maximum counts from there
            held[key] = seen
        self._first_seen = held  # claims that ended are forgotten
        grace = timedelta(seconds=RECYCLE_GRACE_SECONDS)
        overrun = [chunk for chunk in held.values() if now is not None and now > chunk.deadline + grace]
        for chunk in overrun:
            self._recycle(chunk)
            self._first_seen.pop((chunk.chunk_id, chunk.claim_token), None)
        return overrun

    def _recycle(self, held: HeldChunk) -> None:
        chunk = (
            WorkChunk.objects.select_related("instance")
            .filter(id=held.chunk_id, claim_token=held.claim_token, status=ChunkStatus.IN_PROGRESS)
            .first()
        )
        if chunk is None:
            return  # it ended meanwhile (or the keeper recorded the overrun itself)
        max_seconds = _max_seconds(chunk.definition_id, chunk.definition_version)
        on_chunk_errored(
            held_claim(chunk),
            f"the step ran longer than its maximum of {max_seconds:g} s (BATCH_MAX_CHUNK_SECONDS) "
            f"and its process did not stop: taken as hung, process {held.pid} killed",
        )
        if held.pid == self.main_pid or not _is_child(held.pid, self.main_pid):
            logger.error(
                "chunk %s overran in process %s, which is not a pool process of this worker: not killed "
                "(--pool threads/solo are not recycled)",
                held.chunk_id,
                held.pid,
            )
            return
        logger.error(
            "chunk %s overran its maximum of %g s and its pool process %s did not stop: killing it",
            held.chunk_id,
            max_seconds,
            held.pid,
        )
        try:
            os.kill(held.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # it ended meanwhile


def _like_prefix(hostname: str) -> str:
    escaped = hostname.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"{escaped}/%"


def _pid_of(worker: str) -> int | None:
    pid = worker.rpartition("/")[2]
    return int(pid) if pid.isdigit() else None


def _max_seconds(definition_id: str, version: int) -> float:
    default = batch_settings().max_chunk_run.total_seconds()
    try:
        return registry.get(definition_id, version).max_chunk_seconds or default
    except UnknownJobDefinition:
        return default


def _is_child(pid: int, parent: int) -> bool:
    """Whether `pid` is a child of `parent` (Linux /proc): a pid reused by another process is left alone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rpartition(b")")[2].split()
    except OSError:
        return False
    return int(fields[1]) == parent


def start_pool_watchdog(hostname: str) -> threading.Thread:
    """In the Celery main process (`batch.tasks`, on worker_ready): watch the pool processes' chunks."""
    watchdog = PoolWatchdog(hostname, os.getpid())

    def watch() -> None:
        while True:
            try:
                watchdog.check_once()
            except Exception:  # the database away, say: look again next poll, on a new connection
                logger.exception("pool watchdog: check failed; retrying")
                connection.close()
            time.sleep(POLL_SECONDS)

    thread = threading.Thread(target=watch, name="batch-pool-watchdog", daemon=True)
    thread.start()
    return thread
