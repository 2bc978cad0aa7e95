"""The figures of the job dashboard (the batch admin's overview and job pages), each one aggregate query.

The admin views only render these. Times are PostgreSQL's (`now()`), so a web process whose clock drifts
still draws the last hour the workers wrote. Every query is answered from an index whatever the size of the
tables: counts per status, completed chunks of the last minutes, chunks in flight, workers' heartbeats.
The totals of minutes that can no longer change are kept per web process, so a view stays cheap on a busy
cluster.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from uuid import UUID

from django.conf import settings
from django.db import connection
from django.db.models import Count, Max, Min, Q, Sum

from batch import control, sql
from batch.control import JobSnapshot, StepProgress
from batch.models import JobInstance, WorkChunk
from batch.progress import definition_of, estimate_rates
from batch.queues import pending_notifications_of, work_notification_queue
from batch.statuses import UNFINISHED_JOB_STATUSES, ChunkStatus, JobStatus
from batch.transitions import read_database_now
from batch.waiting import waiting_notes
from jobsite.display import short_duration

logger = logging.getLogger(__name__)

THROUGHPUT_MINUTES = 60
RUNNING_JOBS_SHOWN = 25
ERRORS_SHOWN = 50


@dataclass(frozen=True)
class MinuteThroughput:
    minute: datetime  # the start of the minute
    chunks: int
    records: int


@dataclass(frozen=True)
class NodeActivity:
    """One node's batch queue: what waits in Redis, what is being worked on, who consumes it."""

    node_id: str
    module_id: str
    queue: str
    queue_depth: int | None  # None: Redis did not answer
    chunks_in_flight: int
    workers: Sequence[str]  # Celery hostname/pid of each worker whose heartbeat is recent


@dataclass(frozen=True)
class ChunkError:
    chunk_id: UUID
    step_id: str
    status: str
    attempts: int
    error_count: int
    worker: str
    message: str
    time: datetime
    next_attempt_at: datetime | None  # when an ERRORED chunk's retry is due (its backoff ends)


@dataclass(frozen=True)
class JobErrors:
    total: int  # the job's error count: every failed attempt of every chunk
    chunks_with_errors: int
    shown: Sequence[ChunkError]  # the most recent first, at most ERRORS_SHOWN


def job_counts_by_status() -> dict[str, int]:
    """Every status, zero included, in the order of the state machine."""
    counts = dict(JobInstance.objects.order_by().values_list("status").annotate(jobs=Count("*")))
    return {status: counts.get(status, 0) for status in JobStatus}


class _SettledMinutes:
    """Per-minute totals of minutes that can no longer change, kept in this process: a view then aggregates
    only the chunks of the last few minutes, not the whole hour (half a million rows on a busy cluster).
    A minute is settled SETTLE_MINUTES after it ended by the database's clock, allowing for workers whose
    clocks lag (they stamp end_time)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._minutes: dict[datetime, tuple[int, int]] = {}

    def known(self, since: datetime) -> dict[datetime, tuple[int, int]]:
        with self._lock:
            for minute in [minute for minute in self._minutes if minute < since]:
                del self._minutes[minute]
            return dict(self._minutes)

    def remember(self, minutes: Mapping[datetime, tuple[int, int]]) -> None:
        with self._lock:
            self._minutes.update(minutes)

    def forget(self) -> None:
        with self._lock:
            self._minutes.clear()


SETTLE_MINUTES = 2
settled_minutes = _SettledMinutes()


def throughput_per_minute(minutes: int = THROUGHPUT_MINUTES) -> list[MinuteThroughput]:
    """Chunks and records completed per minute over the last `minutes` minutes, oldest first, the current
    (partial) minute last; minutes without a completed chunk are zeros."""
    with connection.cursor() as cursor:
        cursor.execute(sql.CURRENT_MINUTE)
        current = cursor.fetchone()[0]
        first = current - timedelta(minutes=minutes - 1)
        settled_before = current - timedelta(minutes=SETTLE_MINUTES)
        window = [first + timedelta(minutes=offset) for offset in range(minutes)]
        known = settled_minutes.known(since=first)
        read_from = next(
            (minute for minute in window if minute not in known and minute < settled_before), settled_before
        )
        cursor.execute(
            sql.COMPLETED_PER_MINUTE,
            [ChunkStatus.COMPLETED.value, read_from],
        )
        read: dict[datetime, tuple[int, int]] = {}
        for minute, definition_id, version, step_id, chunks, records in cursor.fetchall():
            counted = step_id == _records_step_id(definition_id, version, step_id)
            so_far = read.get(minute, (0, 0))
            read[minute] = (so_far[0] + int(chunks), so_far[1] + (int(records) if counted else 0))
    settled_minutes.remember(
        {minute: read.get(minute, (0, 0)) for minute in window if read_from <= minute < settled_before}
    )
    totals = {**known, **read}
    return [MinuteThroughput(minute, *totals.get(minute, (0, 0))) for minute in window]


def running_jobs(limit: int = RUNNING_JOBS_SHOWN) -> list[JobSnapshot]:
    """The unfinished jobs, newest first, their progress, records, rate and ETA computed from their chunks now
    (the snapshots' one grouped query for all of them) rather than read from the row maintenance refreshes every
    few seconds."""
    jobs = list(control.list_jobs(UNFINISHED_JOB_STATUSES)[:limit])
    paused = dict(JobInstance.objects.filter(id__in=[job.id for job in jobs]).values_list("id", "paused_seconds"))
    live = []
    for job in jobs:
        rates = estimate_rates(
            definition_of(job.definition_id, job.definition_version),
            {step.step_id: step for step in job.steps},
            status=job.status,
            paused_seconds=paused.get(job.id, 0.0),
        )
        live.append(
            replace(
                job,
                combined_records_processed=rates.records,
                progress=rates.progress,
                records_per_second=rates.records_per_second,
                elapsed_seconds=rates.elapsed_seconds,
                estimated_seconds_remaining=rates.estimated_seconds_remaining,
            )
        )
    return live


def node_activity() -> list[NodeActivity]:
    """Every node with live batch workers (their heartbeats, `batch.control.live_nodes()`), with an unfinished
    job, or this web process's own: its queue's depth, its chunks in flight and its live workers."""
    live = {(node.node_id, node.module_id): node.workers for node in control.live_nodes()}
    nodes = set(
        JobInstance.objects.filter(status__in=UNFINISHED_JOB_STATUSES)
        .order_by()
        .values_list("node_id", "module_id")
        .distinct()
    )
    nodes |= set(live) | {(settings.NODE_ID, settings.MODULE_ID)}
    in_flight = dict(
        ((node, module), count)
        for node, module, count in WorkChunk.objects.filter(status=ChunkStatus.IN_PROGRESS)
        .order_by()
        .values_list("instance__node_id", "instance__module_id")
        .annotate(chunks=Count("*"))
    )
    queues = {(node_id, module_id): work_notification_queue(node_id, module_id) for node_id, module_id in sorted(nodes)}
    depths = _queue_depths(list(queues.values()))
    return [
        NodeActivity(
            node_id=node_id,
            module_id=module_id,
            queue=queue,
            queue_depth=depths.get(queue),
            chunks_in_flight=in_flight.get((node_id, module_id), 0),
            workers=live.get((node_id, module_id), ()),
        )
        for (node_id, module_id), queue in queues.items()
    ]


@dataclass(frozen=True)
class TimelineRow:
    """One step on the job page's timeline: its figures, and its bar from first start to last end, in percent
    of the job's span (a Gantt chart: the step that took longest, the bottleneck, is marked)."""

    step: StepProgress
    left_percent: float
    width_percent: float
    longest: bool


def step_timeline(job: JobSnapshot) -> list[TimelineRow]:
    """Each step of the job in definition order: chunks by status, first start, last end, records, rate, bar."""
    starts = [step.start_time for step in job.steps if step.start_time]
    ends = [step.end_time for step in job.steps if step.end_time]
    first, last = (min(starts), max(ends)) if starts and ends else (None, None)
    span = (last - first).total_seconds() if first and last and last > first else 0.0
    longest = max(job.steps, key=lambda step: step.duration_seconds or 0.0, default=None)
    rows = []
    for step in job.steps:
        if span and step.start_time and step.end_time:
            left = (step.start_time - first).total_seconds() / span * 100
            width = max((step.end_time - step.start_time).total_seconds() / span * 100, 0.5)
        else:
            left = width = 0.0
        rows.append(
            TimelineRow(
                step, round(left, 2), round(min(width, 100 - left), 2), step is longest and bool(step.duration_seconds)
            )
        )
    return rows


def job_errors(job_id: UUID, limit: int = ERRORS_SHOWN) -> JobErrors:
    """The job's errors from its chunks: the total of failed attempts, and the latest chunks that had any."""
    with_errors = WorkChunk.objects.filter(instance_id=job_id).filter(
        Q(error_count__gt=0) | Q(status=ChunkStatus.FAILED)
    )
    totals = with_errors.aggregate(total=Sum("error_count"), chunks=Count("*"))
    shown = [
        ChunkError(
            chunk_id=chunk_id,
            step_id=step_id,
            status=status,
            attempts=attempts,
            error_count=errors,
            worker=worker,
            message=message or "",
            time=updated,
            next_attempt_at=due if status == ChunkStatus.ERRORED else None,
        )
        for chunk_id, step_id, status, attempts, errors, worker, message, updated, due in with_errors.order_by(
            "-update_time"
        ).values_list(
            "id",
            "target_step_id",
            "status",
            "attempts",
            "error_count",
            "worker",
            "error_message",
            "update_time",
            "announced_at",
        )[:limit]  # an errored chunk is announced for when its backoff ends
    ]
    return JobErrors(total=totals["total"] or 0, chunks_with_errors=totals["chunks"], shown=shown)


def _records_step_id(definition_id: str, version: int, step_id: str) -> str:
    """The step whose records count for the job (a definition no longer registered: every step's)."""
    definition = definition_of(definition_id, version)
    return definition.records_step_id if definition is not None else step_id


def eta(job: JobSnapshot) -> str:
    """An ended job has no ETA; an unfinished one has one once it has progress to extrapolate from."""
    if job.ended:
        return "-"
    return short_duration(job.estimated_seconds_remaining)


def _queue_depths(queues: list[str]) -> dict[str, int]:
    """Messages waiting per queue; {} when Redis does not answer (the page says "unknown")."""
    try:
        return pending_notifications_of(queues)
    except Exception:
        logger.warning("queues could not be measured", exc_info=True)
        return {}


def why_waiting(job: JobSnapshot) -> list[str]:
    """Why an unfinished job makes no progress, one line per cause found. With chunks running: what those say
    they wait for (`StepContext.say_waiting`: a source that is down), if anything. With none running: a gate,
    its concurrency cap, no live worker on its node, retry backoffs, chunks waiting to poll, the messages ahead
    of it in its queue. Empty for an ended job. Times are the database's."""
    if job.ended:
        return []
    if any(step.chunks.get(ChunkStatus.IN_PROGRESS) for step in job.steps):
        return waiting_notes(job.id)
    count = {status: sum(step.chunks.get(status, 0) for step in job.steps) for status in ChunkStatus}
    reasons = []
    if job.current_gated_step_id:
        gated = job.step(job.current_gated_step_id)
        held = sum(step.chunks.get(ChunkStatus.GATE_WAITING, 0) for step in job.steps)
        if held and gated.done < gated.total:
            reasons.append(
                f"the gate: {held} chunks of the next step wait until the {gated.total - gated.done} "
                f"unfinished chunks of step {gated.step_id} have completed"
            )
    in_flight = count[ChunkStatus.QUEUED] + count[ChunkStatus.IN_PROGRESS]
    if job.max_concurrent_chunks and count[ChunkStatus.READY] and in_flight >= job.max_concurrent_chunks:
        reasons.append(
            f"its concurrency cap: {in_flight} of at most {job.max_concurrent_chunks} chunks queued or "
            f"running, {count[ChunkStatus.READY]} more ready"
        )
    live = {(node.node_id, node.module_id) for node in control.live_nodes()}
    if (job.node_id, job.module_id) not in live:
        reasons.append(
            f"no live worker on node {job.node_id} (module {job.module_id}): its chunks wait until one "
            f"starts there, or maintenance moves the job to a live node after "
            f"BATCH_NODE_TIMEOUT_SECONDS ({settings.BATCH_NODE_TIMEOUT_SECONDS} s)"
        )
    waits = WorkChunk.objects.filter(instance_id=job.id).aggregate(
        backoff_until=Max("announced_at", filter=Q(status=ChunkStatus.ERRORED)),
        poll_at=Min("next_poll_time", filter=Q(status=ChunkStatus.POLL_WAITING)),
    )
    now = read_database_now()
    if count[ChunkStatus.ERRORED] and waits["backoff_until"] and waits["backoff_until"] > now:
        reasons.append(
            f"{count[ChunkStatus.ERRORED]} chunk(s) wait out their retry backoff after an error, until "
            f"{waits['backoff_until']:%H:%M:%S %Z} (Retry now skips it)"
        )
    if count[ChunkStatus.POLL_WAITING] and waits["poll_at"]:
        reasons.append(
            f"{count[ChunkStatus.POLL_WAITING]} chunk(s) asked to run again later, the first at "
            f"{waits['poll_at']:%H:%M:%S %Z}"
        )
    if count[ChunkStatus.QUEUED]:
        queue = work_notification_queue(job.node_id, job.module_id)
        depth = _queue_depths([queue]).get(queue)
        ahead = "an unknown number of" if depth is None else str(depth)
        reasons.append(
            f"{count[ChunkStatus.QUEUED]} of its chunks are announced on queue {queue}, where {ahead} "
            "messages wait for a worker"
        )
    return reasons
