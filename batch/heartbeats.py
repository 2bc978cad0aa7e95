"""Heartbeats: which nodes have live batch workers, on PostgreSQL's clock.

Every batch worker (the main process of a `celery worker` that consumes its node's batch queue)
records a heartbeat from a thread: node id, module id, `hostname/pid`, stamped with the database's
`now()`, so "not seen for N seconds" means the same on every machine whatever their clocks say. It beats
only after a round trip to the broker: a host cut off from Redis but not from PostgreSQL consumes nothing,
and must count as dead so that its jobs move (a beat proving the database alone kept them stalled).
`batch.nodes` moves the jobs of a node none of whose workers beat within `BATCH_NODE_TIMEOUT_SECONDS`;
the job dashboard lists `live_nodes()`; a new job starts on `node_for_new_job()`. Web processes and the
scheduler worker record nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection
from django.db.models import Q
from django.db.models.functions import Now

from batch import sql
from batch.conf import batch_settings
from batch.models import WorkerHeartbeat
from batch.queues import broker_is_reachable, work_notification_queue
from batch.statuses import UNFINISHED_JOB_STATUSES

logger = logging.getLogger(__name__)

HEARTBEAT_RETENTION = timedelta(days=1)  # rows of workers not seen for this long are deleted
LATE_AFTER_INTERVALS = 1.5  # a beat recorded this many intervals after the one before is logged as late


@dataclass(frozen=True)
class LiveNode:
    """A node (and module) with batch workers that beat within the node timeout."""

    node_id: str
    module_id: str
    workers: tuple[str, ...]  # Celery hostname/pid of each live worker
    last_seen: datetime  # the latest heartbeat, on the database's clock


@dataclass(frozen=True)
class LiveWorker:
    """A batch worker that beat within the node timeout, with the settings fingerprint its process reported."""

    worker: str  # Celery hostname/pid
    node_id: str
    module_id: str
    settings_fingerprint: str  # BATCH_SETTINGS_FINGERPRINT: opaque here
    last_seen: datetime


def record_heartbeat(worker: str, node_id: str | None = None, module_id: str | None = None) -> None:
    """This worker is alive now (by the database's clock). Defaults: this process's node and module."""
    with connection.cursor() as cursor:
        cursor.execute(
            sql.HEARTBEAT,
            {
                "worker": worker[:200],
                "node_id": node_id or settings.NODE_ID,
                "module_id": module_id or settings.MODULE_ID,
                "fingerprint": batch_settings().settings_fingerprint,
            },
        )


def record_stopped(worker: str) -> None:
    """A clean shutdown: the worker is no longer listed as live, but its node keeps its jobs for the
    node timeout, the grace period of a restart."""
    WorkerHeartbeat.objects.filter(worker=worker[:200]).update(last_seen=Now(), stopped_at=Now())


def live_nodes(module_id: str | None = None) -> list[LiveNode]:
    """Nodes with a batch worker seen within `BATCH_NODE_TIMEOUT_SECONDS` (and not stopped since),
    by node and module id. What the dashboard shows as "workers seen alive recently"."""
    workers = (
        WorkerHeartbeat.objects.filter(_seen_recently(), stopped_at__isnull=True)
        .order_by("node_id", "module_id", "worker")
        .values_list("node_id", "module_id", "worker", "last_seen")
    )
    if module_id is not None:
        workers = workers.filter(module_id=module_id)
    nodes: dict[tuple[str, str], list[tuple[str, datetime]]] = {}
    for node_id, module, worker, last_seen in workers.iterator():
        nodes.setdefault((node_id, module), []).append((worker, last_seen))
    return [
        LiveNode(node_id, module, tuple(worker for worker, _ in seen), max(last for _, last in seen))
        for (node_id, module), seen in nodes.items()
    ]


def live_workers() -> list[LiveWorker]:
    """Every batch worker seen within the node timeout (and not stopped since), by name."""
    workers = (
        WorkerHeartbeat.objects.filter(_seen_recently(), stopped_at__isnull=True)
        .order_by("worker")
        .values_list("worker", "node_id", "module_id", "settings_fingerprint", "last_seen")
    )
    return [LiveWorker(*row) for row in workers]


def node_for_new_job(module_id: str | None = None) -> str:
    """The node a job started by this process runs on: its own node when that has a live batch worker of
    the module; otherwise (a web-only host, or its node's workers are all down) a live node that has, the
    least busy, so the job starts at once instead of waiting `BATCH_NODE_TIMEOUT_SECONDS` for maintenance
    to move it. With no live node of the module at all, its own node: maintenance moves the job once one is."""
    module_id = module_id or settings.MODULE_ID
    with connection.cursor() as cursor:
        cursor.execute(
            sql.NODE_FOR_NEW_JOB,
            {
                "module": module_id,
                "own": settings.NODE_ID,
                "timeout": batch_settings().node_timeout,
                "unfinished": sorted(UNFINISHED_JOB_STATUSES),
            },
        )
        row = cursor.fetchone()
    return row[0] if row else settings.NODE_ID


class Heartbeat:
    """Beats for one worker from a daemon thread, every third of the node timeout, until stopped.

    A failed beat (PostgreSQL restarting, a network cut) is logged and tried again at the next interval;
    it never ends the thread. The thread's connection is closed after every beat, so a broken one is
    never reused and the worker holds no idle connection between beats.
    """

    def __init__(self, worker: str, node_id: str | None = None, module_id: str | None = None):
        self.worker = worker
        self.node_id = node_id or settings.NODE_ID
        self.module_id = module_id or settings.MODULE_ID
        self.failing = False
        self._last_beat: float | None = None  # time.monotonic() of the last recorded beat
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="batch-node-heartbeat", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5) -> None:
        """End the thread and record the clean shutdown (best effort: the worker is going anyway)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
        try:
            record_stopped(self.worker)
        except Exception as error:
            logger.warning("worker %s: could not record its shutdown (%s)", self.worker, error)
        finally:
            _close_connection()

    def beat(self) -> bool:
        """One heartbeat, after a broker round trip; False (logged) when it could not be recorded."""
        try:
            if not broker_is_reachable():
                raise ConnectionError("the broker does not answer: this worker consumes nothing")
            record_heartbeat(self.worker, self.node_id, self.module_id)
        except Exception as error:
            if not self.failing:
                logger.warning(
                    "worker %s: heartbeat failed (%s); retrying every %.0fs",
                    self.worker,
                    error,
                    batch_settings().heartbeat_interval.total_seconds(),
                )
            self.failing = True
            return False
        finally:
            _close_connection()
        now = time.monotonic()
        late = self._last_beat is not None and now - self._last_beat > LATE_AFTER_INTERVALS * self._interval()
        if self.failing or late:
            silent = "" if self._last_beat is None else f" after {now - self._last_beat:.1f} s without"
            logger.warning(
                "worker %s: heartbeat recorded again%s (the node counts as dead after %.0f s)",
                self.worker,
                silent,
                batch_settings().node_timeout.total_seconds(),
            )
        self._last_beat = now
        self.failing = False
        return True

    @staticmethod
    def _interval() -> float:
        return batch_settings().heartbeat_interval.total_seconds()

    def _run(self) -> None:
        while True:
            self.beat()
            if self._stopping.wait(batch_settings().heartbeat_interval.total_seconds()):
                return


_heartbeat: Heartbeat | None = None


def start_heartbeat(worker: str, consumed_queues: Collection[str]) -> bool:
    """Start beating for this process's worker if it consumes this node's batch queue (a worker of
    other queues only, such as the scheduler's, does not keep the node's jobs running)."""
    global _heartbeat
    if work_notification_queue() not in consumed_queues:
        logger.info("worker %s consumes no batch queue of node %s: it records no heartbeat", worker, settings.NODE_ID)
        return False
    if _heartbeat is None or _heartbeat.worker != worker:
        _heartbeat = Heartbeat(worker)
    _heartbeat.start()
    return True


def stop_heartbeat() -> None:
    global _heartbeat
    if _heartbeat is not None:
        _heartbeat.stop()
        _heartbeat = None


def forget_departed_workers() -> int:
    """Delete the rows of workers not seen for a day (each worker start adds one: the pid is in its name)."""
    deleted, _ = WorkerHeartbeat.objects.filter(last_seen__lt=Now() - HEARTBEAT_RETENTION).delete()
    return deleted


def _seen_recently() -> Q:
    return Q(last_seen__gt=Now() - batch_settings().node_timeout)


def _close_connection() -> None:
    try:
        connection.close()
    except Exception as error:  # a broken connection may fail to close; it is dropped all the same
        logger.debug("closing the heartbeat's connection failed: %s", error)
