"""Prometheus metrics of the batch engine (`prometheus-client`), exposed by the web process's `/metrics`.

Two kinds, because a scrape reaches one web process while the work happens in Celery pool processes:

- what happens in a process (a chunk ran, a maintenance pass took so long) is a counter or histogram of that
  process. With `PROMETHEUS_MULTIPROC_DIR` set (settings), every process writes its values to a file there
  and `/metrics` adds them up over gunicorn's and Celery's processes (prometheus-client's multiprocess mode);
- what the cluster is (jobs by status, queue depths, live workers) is read from PostgreSQL and Redis at scrape
  time by `ClusterCollector`, so it is the same whichever web process answers and needs no process's memory.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime

from django.conf import settings
from django.db.models import Count, Min
from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from batch.heartbeats import live_nodes
from batch.models import JobInstance, WorkChunk
from batch.queues import pending_notifications_of, work_notification_queue
from batch.statuses import UNFINISHED_JOB_STATUSES, ChunkStatus, JobStatus
from batch.transitions import read_database_now

__all__ = ["ClusterCollector", "chunk_duration", "chunk_ran", "chunks_finished", "maintenance_pass_duration"]

logger = logging.getLogger(__name__)

# Chunks take from milliseconds (no-op) to minutes (an export's range of a million rows).
CHUNK_SECONDS_BUCKETS = (0.005, 0.025, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 180, 600, 1800, 3600)

chunks_finished = Counter(
    "heavylift_chunks_finished",
    "Chunk runs by how they ended: completed, errored (retried), failed, poll "
    "(retry later) or interrupted (cancelled, lease lost)",
    ["definition", "step", "outcome"],
)
chunk_duration = Histogram(
    "heavylift_chunk_duration_seconds",
    "How long a chunk's step ran, whatever its outcome",
    ["definition", "step"],
    buckets=CHUNK_SECONDS_BUCKETS,
)
maintenance_pass_duration = Histogram(
    "heavylift_maintenance_pass_duration_seconds",
    "How long a maintenance pass that ran took",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)


def chunk_ran(definition_id: str, step_id: str, outcome: str, seconds: float) -> None:
    """A worker ran a chunk's step: called once per run, after its outcome was recorded."""
    chunks_finished.labels(definition_id, step_id, outcome).inc()
    chunk_duration.labels(definition_id, step_id).observe(seconds)


class ClusterCollector(Collector):
    """Gauges read from PostgreSQL (jobs, waiting chunks, heartbeats) and Redis (queue depths) at each scrape:
    a few indexed aggregates, as the dashboard's overview."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        jobs = GaugeMetricFamily(
            "heavylift_jobs",
            "Job instances by definition and status (ended ones until purged)",
            labels=["definition", "status"],
        )
        counts = {
            (definition, status): count
            for definition, status, count in JobInstance.objects.order_by()
            .values_list("definition_id", "status")
            .annotate(n=Count("*"))
        }
        for definition in sorted({definition for definition, _ in counts}):
            for status in JobStatus:
                jobs.add_metric([definition, status.value], counts.get((definition, status.value), 0))
        yield jobs

        unfinished = {
            instance_id: (node, module)
            for instance_id, node, module in JobInstance.objects.filter(status__in=UNFINISHED_JOB_STATUSES)
            .order_by()
            .values_list("id", "node_id", "module_id")
        }
        live = {(node.node_id, node.module_id): len(node.workers) for node in live_nodes()}
        nodes = set(live) | set(unfinished.values()) | {(settings.NODE_ID, settings.MODULE_ID)}  # as the dashboard
        workers = GaugeMetricFamily(
            "heavylift_live_workers", "Batch worker processes whose heartbeat is recent", labels=["node", "module"]
        )
        for node, module in sorted(nodes):
            workers.add_metric([node, module], live.get((node, module), 0))
        yield workers

        queues = {(node, module): work_notification_queue(node, module) for node, module in sorted(nodes)}
        depth = GaugeMetricFamily(
            "heavylift_queue_depth",
            "Messages waiting in a node's batch queue on Redis",
            labels=["node", "module", "queue"],
        )
        try:
            depths = pending_notifications_of(list(queues.values()))
        except Exception:  # Redis down: the gauges it answers are left out, the others still scraped
            logger.warning("queue depths could not be read for /metrics", exc_info=True)
        else:
            for (node, module), queue in queues.items():
                depth.add_metric([node, module, queue], depths[queue])
        yield depth

        oldest = GaugeMetricFamily(
            "heavylift_queue_oldest_message_age_seconds",
            "Age of the oldest announcement of a node's queue not yet taken by a worker (its QUEUED chunks), "
            "by the database's clock; 0 when none waits",
            labels=["node", "module"],
        )
        announced: dict[tuple[str, str], datetime] = {}
        for instance_id, at in (
            WorkChunk.objects.filter(
                instance_id__in=list(unfinished), status=ChunkStatus.QUEUED, announced_at__isnull=False
            )
            .order_by()
            .values_list("instance_id")
            .annotate(at=Min("announced_at"))
        ):
            node_module = unfinished[instance_id]  # per job, from the (instance, status) index
            announced[node_module] = min(at, announced.get(node_module, at))
        now = read_database_now()
        for node, module in sorted(nodes):
            at = announced.get((node, module))
            oldest.add_metric([node, module], max((now - at).total_seconds(), 0.0) if at else 0.0)
        yield oldest
