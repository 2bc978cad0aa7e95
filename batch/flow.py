"""How a job moves on: chunks are queued and announced, gates open, the reducer is triggered, the job ends.

Every function here is safe to call from any process at any time (worker, maintenance, batch.control):
each move is a conditional update, so the first caller wins and the others change nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from itertools import groupby
from operator import itemgetter
from uuid import UUID

from django.db import connection, transaction
from django.db.models import Q
from django.db.models.functions import Now

from batch.api import CompletedJob, JobDefinition, RestartedJob, StepDefinition, StepKind, StoppedJob
from batch.claims import ClaimedJob
from batch.exceptions import UnknownJobDefinition
from batch.models import JobInstance, WorkChunk
from batch.notifications import WorkNotification, announce
from batch.progress import compute_progress, settle_totals
from batch.registry import registry
from batch.statuses import ChunkStatus, JobStatus
from batch.transitions import (
    change_all_chunks_status,
    change_chunks_status,
    change_job_status,
    change_listed_chunks_status,
    database_now,
)

logger = logging.getLogger(__name__)

ENQUEUE_PAGE = 1000  # chunks moved READY -> QUEUED per statement: a few ms each, and bounded memory
# Chunks that hold one of a capped job's slots: announced, running, or waiting for their retry.
IN_FLIGHT_CHUNK_STATUSES = [ChunkStatus.QUEUED, ChunkStatus.IN_PROGRESS, ChunkStatus.ERRORED]
# Fewer unfinished chunks than this and some may be finishing right now in other workers: check again
# after the commit. More workers than this finishing one job's chunks in the same instant would leave
# the job to maintenance for one interval.
NEAR_THE_END = 64
CHUNKS_PER_MESSAGE = 8  # at most, in one work message (see announce_chunks)
MESSAGES_PER_ANNOUNCEMENT = 64  # at least, before chunks share messages


def announce_chunks(
    instance: JobInstance | ClaimedJob,
    chunks: Iterable[tuple[UUID, str]],
    delay_seconds: float = 0.0,
    *,
    again: bool = False,
) -> None:
    """One message per chunk, or, when many are announced at once, one per few chunks of the same step.

    A message costs the worker's main process more than a no-op chunk costs the database (delivery,
    the unacked bookkeeping in Redis, the hand-over to a pool process, the acknowledgement), so a
    large announcement is cut into at least MESSAGES_PER_ANNOUNCEMENT messages of up to
    CHUNKS_PER_MESSAGE chunks: still enough messages to keep every worker busy. A capped job's
    chunks go one per message: each is one of its slots. Work announced `again` goes ahead of new work
    (`notifications.announce`).
    """
    chunks = list(chunks)
    per_message = (
        1
        if instance.max_concurrent_chunks
        else max(1, min(CHUNKS_PER_MESSAGE, len(chunks) // MESSAGES_PER_ANNOUNCEMENT))
    )
    notifications = []
    for step_id, same_step in groupby(chunks, key=itemgetter(1)):
        chunk_ids = [chunk_id for chunk_id, _ in same_step]
        for start in range(0, len(chunk_ids), per_message):
            first, *following = chunk_ids[start : start + per_message]
            notifications.append(
                WorkNotification(
                    instance.id, instance.definition_id, instance.definition_version, step_id, first, tuple(following)
                )
            )
    announce(instance.node_id, instance.module_id, notifications, delay_seconds=delay_seconds, again=again)


def announce_reduction(instance: JobInstance | ClaimedJob, step_id: str, *, again: bool = False) -> None:
    announce(
        instance.node_id,
        instance.module_id,
        [WorkNotification(instance.id, instance.definition_id, instance.definition_version, step_id, None)],
        again=again,
    )


def enqueue_ready_chunks(instance: JobInstance | ClaimedJob, only: list[UUID] | None = None) -> int:
    """READY -> QUEUED, announced after commit; a capped job only up to its number of chunks in flight."""
    ready = Q(instance_id=instance.id, status=ChunkStatus.READY)
    if instance.max_concurrent_chunks:
        return _top_up(instance, ready)
    if only is not None:
        with transaction.atomic(savepoint=False):
            moved = change_listed_chunks_status(only, ChunkStatus.QUEUED, announced_at=database_now())
            announce_chunks(instance, moved)
        return len(moved)
    queued = 0
    while True:
        with transaction.atomic(savepoint=False):
            moved = change_chunks_status(ready, ChunkStatus.QUEUED, limit=ENQUEUE_PAGE, announced_at=database_now())
            announce_chunks(instance, moved)
        queued += len(moved)
        if len(moved) < ENQUEUE_PAGE:
            return queued


def _top_up(instance: JobInstance | ClaimedJob, ready: Q) -> int:
    with transaction.atomic():
        # The instance row lock makes concurrent top-ups of one job take turns, so the cap holds.
        JobInstance.objects.select_for_update().filter(id=instance.id).values_list("id").first()
        in_flight = WorkChunk.objects.filter(instance_id=instance.id, status__in=IN_FLIGHT_CHUNK_STATUSES).count()
        room = instance.max_concurrent_chunks - in_flight
        if room <= 0:
            return 0
        moved = change_chunks_status(ready, ChunkStatus.QUEUED, limit=room, announced_at=database_now())
        announce_chunks(instance, moved)
    return len(moved)


def on_chunk_finished(
    instance_id: UUID, definition: JobDefinition, step_id: str, unfinished_seen: int | None = None
) -> None:
    """A chunk left flight: when it was the last of its step (gated) or of its job, move the job on.

    `unfinished_seen` is what the chunk's own completion statement counted (up to NEAR_THE_END). Far
    from the end, that settles it without another query. Near the end, chunks finishing at the same
    moment cannot see each other's commits, so the check runs again after the commit: of two workers
    finishing the last two chunks at once, at least the later one sees both done.
    """
    if unfinished_seen is not None and unfinished_seen >= NEAR_THE_END:
        return
    if unfinished_seen == 0 or not has_unfinished_chunks(instance_id, step_id if definition.gated else None):
        advance_job(instance_id)


def has_unfinished_chunks(instance_id: UUID, step_id: str | None = None) -> bool:
    """Any chunk (of the step) not COMPLETED? Answered from the partial index of unfinished chunks."""
    sql = "SELECT EXISTS (SELECT 1 FROM batch_workchunk WHERE instance_id = %s AND NOT status = 'COMPLETED'"
    params: list = [instance_id]
    if step_id is not None:
        sql += " AND target_step_id = %s"
        params.append(step_id)
    with connection.cursor() as cursor:
        cursor.execute(sql + ")", params)
        return cursor.fetchone()[0]


def advance_job(instance_id: UUID) -> None:
    """If the job's current work is all done: open the next gate, trigger the reducer, or complete the job."""
    instance = JobInstance.objects.filter(id=instance_id).first()
    if instance is None or instance.status != JobStatus.IN_PROGRESS:
        return
    definition = registry.get(instance.definition_id, instance.definition_version)
    if not definition.gated:
        if not has_unfinished_chunks(instance.id):
            complete_job(instance, definition)
        return
    step_id = instance.current_gated_step_id
    reduction = definition.reduction_step
    if reduction is not None and step_id == reduction.id:
        _finalize(instance, reduction.id)  # a job restarted after its reducer failed
        return
    while not has_unfinished_chunks(instance.id, step_id):
        next_step = definition.step_after(step_id)
        if next_step is None:
            complete_job(instance, definition)
            return
        if not _open_gate(instance, step_id, next_step) or next_step.kind is StepKind.REDUCTION:
            return
        step_id = next_step.id  # a step that received no chunks is done at once


def _open_gate(instance: JobInstance, step_id: str, next_step: StepDefinition) -> bool:
    waiting = Q(instance_id=instance.id, target_step_id=next_step.id, status=ChunkStatus.GATE_WAITING)
    with transaction.atomic():
        opened = JobInstance.objects.filter(
            id=instance.id, status=JobStatus.IN_PROGRESS, current_gated_step_id=step_id
        ).update(current_gated_step_id=next_step.id, update_time=Now())
        if not opened:
            return False
        if next_step.kind is StepKind.REDUCTION:
            change_all_chunks_status(waiting, ChunkStatus.REDUCTION_READY)
            _finalize(instance, next_step.id)
            return True
        change_all_chunks_status(waiting, ChunkStatus.READY)
    logger.info("job %s: gate opened to step %s", instance.id, next_step.id)
    enqueue_ready_chunks(instance)
    return True


def _finalize(instance: JobInstance, reduction_step_id: str) -> None:
    """IN_PROGRESS -> FINALIZE happens once, so the reducer is announced once (maintenance re-sends a lost one)."""
    with transaction.atomic():
        if change_job_status(instance.id, JobStatus.FINALIZE):
            announce_reduction(instance, reduction_step_id)


def complete_job(
    instance: JobInstance, definition: JobDefinition, *, only_if: Q | None = None, report: dict | None = None
) -> bool:
    """COMPLETED with final figures and chunk data purged; the completion handler runs once, in the winner."""
    figures = compute_progress(instance.id)
    now = database_now()
    fields = {**figures.as_fields(), "progress": 1.0, "estimated_seconds_remaining": None, "end_time": now}
    if report is not None:
        fields["report"] = report
    with transaction.atomic():
        if not change_job_status(instance.id, JobStatus.COMPLETED, only_if=only_if, **fields):
            return False
        change_all_chunks_status(
            Q(instance_id=instance.id, status=ChunkStatus.REDUCTION_READY),
            ChunkStatus.COMPLETED,
            end_time=now,
            data=None,
        )
        WorkChunk.objects.filter(instance_id=instance.id, data__isnull=False).update(data=None)
    logger.info(
        "job %s (%s) completed: %s records", instance.id, instance.definition_id, figures.combined_records_processed
    )
    if definition.completion_handler is not None:
        try:
            definition.completion_handler(
                CompletedJob(instance.id, instance.parameters, figures.combined_records_processed, report)
            )
        except Exception:
            logger.exception("job %s: the completion handler failed (the job stays COMPLETED)", instance.id)
    return True


def fail_job(instance_id: UUID, message: str) -> bool:
    failed = change_job_status(instance_id, JobStatus.FAILED, error_message=message, end_time=database_now())
    if failed:
        settle_totals(instance_id)
        logger.warning("job %s failed: %s", instance_id, message)
        call_stop_handler(instance_id)
    return failed


def call_stop_handler(instance_id: UUID) -> None:
    """Once the job's FAILED or CANCELLED is committed, its definition's stop handler (if any) with the row as
    it then is; a handler that raises is logged, the job's status stays."""

    def call() -> None:
        instance = JobInstance.objects.get(id=instance_id)
        try:
            definition = registry.get(instance.definition_id, instance.definition_version)
        except UnknownJobDefinition:
            return
        if definition.stop_handler is None or instance.status not in (JobStatus.FAILED, JobStatus.CANCELLED):
            return
        try:
            with transaction.atomic():
                definition.stop_handler(
                    StoppedJob(instance.id, instance.parameters, instance.status, instance.error_message)
                )
        except Exception:
            logger.exception("job %s: the stop handler failed (the job stays %s)", instance.id, instance.status)

    transaction.on_commit(call)


def call_restart_handler(instance_id: UUID) -> None:
    """Once the job's restart is committed, its definition's restart handler (if any), while the job is still
    IN_PROGRESS; a handler that raises is logged, the job runs on."""

    def call() -> None:
        instance = JobInstance.objects.get(id=instance_id)
        try:
            definition = registry.get(instance.definition_id, instance.definition_version)
        except UnknownJobDefinition:
            return
        if definition.restart_handler is None or instance.status != JobStatus.IN_PROGRESS:
            return
        try:
            with transaction.atomic():
                definition.restart_handler(RestartedJob(instance.id, instance.parameters))
        except Exception:
            logger.exception("job %s: the restart handler failed (the job runs on)", instance.id)

    transaction.on_commit(call)
