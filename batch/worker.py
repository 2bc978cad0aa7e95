"""The worker side: a notification arrives, the chunk is claimed, its step runs, the outcome is stored.

Claims lock the row (`SKIP LOCKED`), so a duplicate message arriving at the same moment finds nothing
and a late one finds the chunk no longer claimable: both change nothing. Every outcome is a conditional
update fenced by the claim's random token, so a worker that lost its chunk (its lease ran out and
another worker took it) cannot overwrite the new owner's result.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from uuid import UUID

from django.db import transaction
from django.db.models import Q

from batch import flow, metrics, sql
from batch.api import JobDefinition
from batch.claims import ClaimedChunk, ClaimedJob
from batch.conf import batch_settings
from batch.connections import surviving_connection_loss
from batch.exceptions import JobCancelled, JobFailed, RetryChunkLater
from batch.leases import chunk_lease, lease_keeper
from batch.log_context import chunk_in_hand
from batch.prepared import execute_prepared
from batch.progress import settle_totals
from batch.sink import ChunkSink
from batch.statuses import (
    CHUNK_TRANSITIONS,
    CLAIMABLE_CHUNK_STATUSES,
    ChunkStatus,
    JobStatus,
    chunk_statuses_leading_to,
)
from batch.step_context import RunningStepContext
from batch.transitions import (
    change_chunk_status,
    change_job_status,
    change_owned_chunk_status,
    database_now,
)

logger = logging.getLogger(__name__)

MAX_ERROR_MESSAGE = 2000  # characters kept of an exception's text


# --- Events --------------------------------------------------------------------------------------------
# The claim is one statement, the completion another (with the next chunk's claim in it): `batch.sql`.
CLAIMABLE_SOURCES = sorted(CLAIMABLE_CHUNK_STATUSES & set(chunk_statuses_leading_to(ChunkStatus.IN_PROGRESS)))


@dataclass(frozen=True)
class NextChunk:
    """The chunk that the same message announces next: the completion of the one before claims it."""

    id: UUID
    worker: str = ""
    task_id: str = ""


@dataclass(frozen=True)
class Claim:
    """What a completion's claim of the next chunk got: the chunk, or None when it was not claimable."""

    chunk: ClaimedChunk | None


@dataclass(frozen=True)
class ChunkRun:
    """What running a claimed chunk left: the error message it stored (errored or failed), and the claim of
    the next chunk its completion made (None: no claim was tried)."""

    error: str | None = None
    next_claim: Claim | None = None


def _claim_parameters(chunk_id: UUID, worker: str, task_id: str) -> dict:
    return {
        "claim_id": chunk_id,
        "claimable": CLAIMABLE_SOURCES,
        "running": [JobStatus.QUEUED, JobStatus.IN_PROGRESS],
        "in_progress": ChunkStatus.IN_PROGRESS,
        "errored": ChunkStatus.ERRORED,
        "lease": batch_settings().lease,
        "worker": worker[:200],
        "task_id": task_id[:64],
    }


def on_chunk_claimed(chunk_id: UUID, worker: str = "", task_id: str = "") -> ClaimedChunk | None:
    """QUEUED/ERRORED -> IN_PROGRESS under a row lock; None when there is nothing (more) to claim."""
    row = execute_prepared(sql.CLAIM, _claim_parameters(chunk_id, worker, task_id))
    return None if row is None else _claimed_chunk(chunk_id, worker, row)


_last_late_claim_log = 0.0  # monotonic time of this process's last "claimed late" line


def _log_if_late(chunk_id: UUID, waited_seconds: float | None) -> None:
    """A chunk announced longer ago than a node may stay silent waited for a deep queue or for workers that
    were cut off: say so (at most once a minute per process, a backlog of thousands would say it each time)."""
    global _last_late_claim_log
    if waited_seconds is None or waited_seconds <= batch_settings().node_timeout.total_seconds():
        return
    if time.monotonic() - _last_late_claim_log >= 60:
        _last_late_claim_log = time.monotonic()
        logger.warning(
            "chunk %s claimed %.0f s after it was announced (a deep queue, or workers cut off)",
            chunk_id,
            waited_seconds,
        )


def _claimed_chunk(chunk_id: UUID, worker: str, row: tuple) -> ClaimedChunk:
    """The claimed chunk from the columns the claim returned; a QUEUED job is IN_PROGRESS from its first claim."""
    (
        claim_token,
        step_id,
        data,
        attempts,
        error_count,
        poll_attempts,
        sequence,
        instance_id,
        definition_id,
        definition_version,
        job_status,
        parameters,
        node_id,
        module_id,
        max_concurrent_chunks,
        waited_seconds,
    ) = row
    _log_if_late(chunk_id, waited_seconds)
    if job_status == JobStatus.QUEUED:
        change_job_status(
            instance_id, JobStatus.IN_PROGRESS, only_if=Q(status=JobStatus.QUEUED), start_time=database_now()
        )
    job = ClaimedJob(
        id=instance_id,
        definition_id=definition_id,
        definition_version=definition_version,
        parameters=json.loads(parameters),
        node_id=node_id,
        module_id=module_id,
        max_concurrent_chunks=max_concurrent_chunks,
    )
    return ClaimedChunk(
        id=chunk_id,
        job=job,
        target_step_id=step_id,
        sequence=sequence,
        data=json.loads(data) if data is not None else None,
        attempts=attempts,
        error_count=error_count,
        poll_attempts=poll_attempts,
        claim_token=claim_token,
        worker=worker[:200],
    )


def run_chunk(definition: JobDefinition, chunk: ClaimedChunk, next_chunk: NextChunk | None = None) -> ChunkRun:
    """Run the claimed chunk's step (its lease renewed meanwhile) and store the outcome.

    Returns the error message stored for the chunk when this run errored or failed it (the Celery task
    reports it as a failed task once every chunk of its message ran, `batch.tasks`), and, when the chunk
    completed, the claim of `next_chunk` its completion made in the same round trip; after any other
    outcome the caller claims the next chunk itself.
    """
    instance = chunk.job
    step = definition.step(chunk.target_step_id)
    max_seconds = definition.max_chunk_seconds or batch_settings().max_chunk_run.total_seconds()
    overrun_errors: list[str | None] = []  # written by the lease keeper's thread, read once the step returned

    def record_overrun() -> None:
        overrun = f"the step ran longer than its maximum of {max_seconds:g} s (BATCH_MAX_CHUNK_SECONDS): taken as hung"
        overrun_errors.append(on_chunk_errored(chunk, overrun))

    lease = chunk_lease(chunk.id, chunk.claim_token, max_seconds, on_overrun=record_overrun)
    error: str | None = None
    next_claim: Claim | None = None
    with lease_keeper.holding(lease), chunk_in_hand(instance.id, chunk.id, step.id):
        context = RunningStepContext(
            instance.id,
            step.id,
            chunk.id,
            definition.parameters_for_step(instance.parameters),
            chunk.data,
            lease,
            attempt=chunk.attempts,
        )
        sink = ChunkSink(definition, instance, chunk, step, context)
        completion: Callable[[], Claim | None] | None = None  # a completion returns its claim of the next chunk
        other_outcome: Callable[[], str | None] | None = None  # any other outcome, the error message it stored
        started = time.monotonic()
        try:
            records = step.run(context, sink)
        except RetryChunkLater as signal:
            other_outcome = partial(
                on_chunk_poll_requested, chunk, definition, signal.delay or batch_settings().retry_later_delay
            )
        except JobFailed as failure:
            other_outcome = partial(on_chunk_failed, chunk, str(failure))
        except JobCancelled:
            other_outcome = partial(on_chunk_interrupted, chunk, context)
        except Exception as raised:
            logger.exception("job %s chunk %s: step %s raised", instance.id, chunk.id, step.id)
            other_outcome = partial(on_chunk_errored, chunk, _describe(raised))
        else:
            if (
                lease.lost
            ):  # the chunk is no longer this claim's (lapsed, overrun, cancelled): its result does not count
                other_outcome = partial(on_chunk_interrupted, chunk, context)
            else:
                completion = partial(
                    on_chunk_completed, chunk, definition, sink, int(records or 0), context.warnings, next_chunk
                )
        ran_for = time.monotonic() - started
        recorded_as = OUTCOMES[(completion or other_outcome).func]
        # Recording the outcome outlives a database restart: the step's work is not thrown away for it.
        try:
            if completion is not None:
                next_claim = surviving_connection_loss(completion, f"recording the completion of chunk {chunk.id}")
            else:
                error = surviving_connection_loss(other_outcome, f"recording the outcome of chunk {chunk.id}")
        except Exception as failure:  # recorded now with its real message, not later as "Worker lost"
            recorded_as = "errored"
            logger.exception("job %s chunk %s: recording the outcome failed", instance.id, chunk.id)
            message = f"recording the outcome failed: {_describe(failure)}"
            error = surviving_connection_loss(
                partial(on_chunk_errored, chunk, message), f"recording the error of {chunk.id}"
            )
        metrics.chunk_ran(definition.id, step.id, recorded_as, ran_for)
    return ChunkRun(error or (overrun_errors[0] if overrun_errors else None), next_claim)


def _move_owned(chunk: ClaimedChunk, target: ChunkStatus, only_if: Q | None = None, **fields) -> bool:
    """Move the chunk only while this claim still owns it (and `only_if` holds)."""
    if only_if is None:
        return change_owned_chunk_status(chunk.id, chunk.claim_token, target, **fields)
    owned = Q(status=ChunkStatus.IN_PROGRESS, claim_token=chunk.claim_token) & only_if
    return change_chunk_status(chunk.id, target, only_if=owned, **fields)


assert ChunkStatus.COMPLETED in CHUNK_TRANSITIONS[ChunkStatus.IN_PROGRESS]  # what `sql.COMPLETE` moves


def on_chunk_completed(
    chunk: ClaimedChunk,
    definition: JobDefinition,
    sink: ChunkSink,
    records: int,
    warnings: list[str],
    next_chunk: NextChunk | None = None,
) -> Claim | None:
    """COMPLETED (fenced by the claim token), and the job moved on if that was its last chunk; with
    `next_chunk`, the claim of that chunk made in the same statement."""
    if sink.pending:
        # The last emitted chunks and the completion commit together; the sink keeps them until that commit,
        # so a retry after a lost connection writes them again instead of completing the chunk without them.
        with transaction.atomic():
            completed, claim = (
                _complete(chunk, definition, records, warnings, next_chunk) if sink.flush() else (None, None)
            )
            if completed is None:
                transaction.set_rollback(True)  # another claim owns the chunk now: its run counts, not ours
                return None  # the next chunk's claim is rolled back with it
    else:
        completed, claim = _complete(chunk, definition, records, warnings, next_chunk)
        if completed is None:
            return claim
    unfinished_seen, job_status = completed
    try:
        if job_status in (JobStatus.FAILED, JobStatus.CANCELLED):
            settle_totals(chunk.instance_id)  # finished after its job ended: it still counts in the job's totals
        else:
            _after_chunk_left_flight(chunk, definition, unfinished_seen)
    except Exception:  # the chunk is done and the next one claimed: maintenance moves the job on instead
        logger.exception("job %s chunk %s: completed, but moving the job on failed", chunk.instance_id, chunk.id)
    return claim


def _complete(
    chunk: ClaimedChunk, definition: JobDefinition, records: int, warnings: list[str], next_chunk: NextChunk | None
) -> tuple[tuple[int, str] | None, Claim | None]:
    """(None when this claim no longer owns the chunk, else the unfinished chunks its statement saw and the
    job's status; the claim of `next_chunk`, None without one)."""
    parameters = {
        "completed": ChunkStatus.COMPLETED,
        "in_progress": ChunkStatus.IN_PROGRESS,
        "records": records,
        "warnings": "\n".join(warnings) or None,
        "chunk_id": chunk.id,
        "claim_token": chunk.claim_token,
        "instance_id": chunk.instance_id,
        "step_id": chunk.target_step_id,
        "limit": flow.NEAR_THE_END,
    }
    if next_chunk is None:
        row = execute_prepared(sql.COMPLETE[definition.gated], parameters)
        return ((row[0], row[1]) if row else None), None
    row = execute_prepared(
        sql.COMPLETE_AND_CLAIM[definition.gated],
        {**parameters, **_claim_parameters(next_chunk.id, next_chunk.worker, next_chunk.task_id)},
    )
    unfinished, job_status, *claimed = row
    completed = None if unfinished is None else (unfinished, job_status)
    return completed, Claim(
        None if claimed[0] is None else _claimed_chunk(next_chunk.id, next_chunk.worker, tuple(claimed))
    )


def on_chunk_errored(chunk: ClaimedChunk, message: str, *, only_if: Q | None = None) -> str | None:
    """ERRORED and announced again for a retry after a backoff (ahead of the node's new work, so the retry
    does not wait for a backlog to drain); past the retry limit, FAILED and the job with it.

    The backoff is kept on the database's clock: `announced_at` is when the retry is due, and the claim
    refuses the chunk before then; the message's countdown only saves the worker a wasted delivery.

    Returns the error message stored, None when this claim no longer owned the chunk.
    """
    errors = chunk.error_count + 1
    if errors > batch_settings().max_chunk_retries:
        return on_chunk_failed(
            chunk, f"Too many errors: {errors}. Last error msg was {message}", error_count=errors, only_if=only_if
        )
    backoff = batch_settings().retry_backoff(errors)
    with transaction.atomic():
        errored = _move_owned(
            chunk,
            ChunkStatus.ERRORED,
            only_if,
            error_count=errors,
            error_message=message,
            lease_expires_at=None,
            announced_at=database_now(backoff),
        )
        if errored:
            flow.announce_chunks(chunk.job, [(chunk.id, chunk.target_step_id)], backoff.total_seconds(), again=True)
    return message if errored else None


def on_chunk_failed(
    chunk: ClaimedChunk, message: str, *, error_count: int | None = None, only_if: Q | None = None
) -> str | None:
    """FAILED, and its job with it. Returns the error message stored, None when this claim no longer owned the chunk."""
    with transaction.atomic():
        failed = _move_owned(
            chunk,
            ChunkStatus.FAILED,
            only_if,
            error_message=message,
            end_time=database_now(),
            lease_expires_at=None,
            error_count=error_count if error_count is not None else chunk.error_count + 1,
        )
        if failed:
            flow.fail_job(chunk.instance_id, message)
    return message if failed else None


def on_lease_expired(chunk: ClaimedChunk, now: datetime, database_started_at: datetime) -> None:
    """Its worker stopped renewing the lease (killed, hung, cut off): an error, retried up to the limit.

    Counting lost workers as errors is what stops a chunk that kills every worker it runs on. But a lease
    last renewed before the database (re)started (`pg_postmaster_start_time()`) may have lapsed only
    because the restart lost the outcome or the renewals (they commit asynchronously): that retry is free,
    not charged against BATCH_MAX_CHUNK_RETRIES.
    """
    lapsed = Q(lease_expires_at__lt=now)
    if chunk.lease_expires_at - batch_settings().lease < database_started_at:
        on_chunk_released_by_restart(chunk, only_if=lapsed)
        return
    on_chunk_errored(
        chunk,
        f"Worker lost: {chunk.worker or 'a worker'} stopped renewing its lease (attempt {chunk.attempts})",
        only_if=lapsed,
    )


def on_chunk_released_by_restart(chunk: ClaimedChunk, *, only_if: Q) -> bool:
    """ERRORED without an error counted, due at once and announced ahead of new work: the database restart
    that cut the claim off is no fault of the chunk's. Its step runs again (steps are idempotent); what the
    lost run recorded in the database was rolled back with the outcome, so nothing counts twice."""
    with transaction.atomic():
        released = _move_owned(chunk, ChunkStatus.ERRORED, only_if, lease_expires_at=None, announced_at=database_now())
        if released:
            flow.announce_chunks(chunk.job, [(chunk.id, chunk.target_step_id)], again=True)
    if released:
        logger.warning(
            "job %s chunk %s: its lease lapsed across a database restart; retried without an error",
            chunk.instance_id,
            chunk.id,
        )
    return released


def on_chunk_poll_requested(chunk: ClaimedChunk, definition: JobDefinition, delay) -> None:
    """POLL_WAITING until `delay` has passed; maintenance makes it READY again then."""
    if _move_owned(
        chunk,
        ChunkStatus.POLL_WAITING,
        lease_expires_at=None,
        next_poll_time=database_now(delay),
        poll_attempts=chunk.poll_attempts + 1,
    ):
        _after_chunk_left_flight(chunk, definition)


def on_chunk_interrupted(chunk: ClaimedChunk, context: RunningStepContext) -> str | None:
    """A cancel stopped the step: the chunk goes back to READY, to run again if the job is restarted.

    A lost lease also looks like a cancel to the step; then the chunk is someone else's (or errored by
    an overrun) and nothing is recorded here.
    """
    if context.job_is_stopped():
        _move_owned(chunk, ChunkStatus.READY, lease_expires_at=None)  # fenced: only while this claim owns it
    elif not context.lease.lost:
        return on_chunk_errored(chunk, "the step raised JobCancelled but the job is not cancelled")
    return None


def _after_chunk_left_flight(
    chunk: ClaimedChunk, definition: JobDefinition, unfinished_seen: int | None = None
) -> None:
    flow.on_chunk_finished(chunk.instance_id, definition, chunk.target_step_id, unfinished_seen)
    if chunk.job.max_concurrent_chunks:
        flow.enqueue_ready_chunks(chunk.job)


def _describe(error: Exception) -> str:
    return f"{type(error).__name__}: {error}"[:MAX_ERROR_MESSAGE]


# How each outcome function is named in `heavylift_chunks_finished{outcome=…}`.
OUTCOMES = {
    on_chunk_completed: "completed",
    on_chunk_errored: "errored",
    on_chunk_failed: "failed",
    on_chunk_poll_requested: "poll",
    on_chunk_interrupted: "interrupted",
}
