"""The reduction step: runs once per job, after the gate before it opened (job in FINALIZE).

Exactly once: the job reached FINALIZE by one conditional update, and a reducer runs only while it holds
the job's reducer lease, taken by another conditional update. A reducer whose process died lets the
lease lapse; maintenance then announces the reduction again and a new attempt starts from scratch
(its inputs are still there), up to the retry limit. A reducer that hangs while its process lives would
renew its lease forever: it has the same maximum run time as a chunk (`BATCH_MAX_CHUNK_SECONDS`, or the
definition's), past which its lease lapses at once, the reason is recorded, and the process is recycled.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any
from uuid import UUID

from django.db.models import F, Q
from django.db.models.functions import Now

from batch import flow
from batch.api import JobDefinition
from batch.conf import batch_settings
from batch.connections import surviving_connection_loss
from batch.exceptions import JobCancelled
from batch.leases import Lease, lease_keeper
from batch.log_context import chunk_in_hand
from batch.models import JobInstance, WorkChunk
from batch.statuses import ChunkStatus, JobStatus
from batch.step_context import RunningStepContext
from batch.transitions import change_job_status, database_now

logger = logging.getLogger(__name__)

INPUT_PAGE = 500  # reduction inputs read per query: bounded memory, whatever the job's size


def on_reduction_notification(instance_id: UUID, definition: JobDefinition) -> None:
    instance = surviving_connection_loss(
        lambda: on_reduction_claimed(instance_id), f"claiming the reduction of job {instance_id}"
    )
    if instance is not None:
        run_reduction(definition, instance)


def on_reduction_claimed(instance_id: UUID) -> JobInstance | None:
    """Take the reducer lease of a FINALIZE job unless a live reducer holds it; None: nothing to do."""
    free = Q(reducer_lease_expires_at__isnull=True) | Q(reducer_lease_expires_at__lt=Now())
    claimed = JobInstance.objects.filter(free, id=instance_id, status=JobStatus.FINALIZE, cancelled=False).update(
        reducer_lease_expires_at=database_now(batch_settings().lease).expression(),
        reducer_attempts=F("reducer_attempts") + 1,
        update_time=Now(),
    )
    return JobInstance.objects.get(id=instance_id) if claimed else None


def reducer_lease(instance_id: UUID, attempt: int, max_seconds: float | None = None) -> Lease:
    def renew() -> bool:
        return bool(
            JobInstance.objects.filter(id=instance_id, status=JobStatus.FINALIZE, reducer_attempts=attempt).update(
                reducer_lease_expires_at=database_now(batch_settings().lease).expression()
            )
        )

    return Lease(
        renew,
        max_seconds=max_seconds,
        on_overrun=None if max_seconds is None else lambda: on_reduction_overrun(instance_id, attempt, max_seconds),
    )


def on_reduction_overrun(instance_id: UUID, attempt: int, max_seconds: float) -> None:
    """The reducer ran past its maximum: its lease lapses now, so maintenance starts the next attempt (or fails
    the job at the retry limit, with this reason)."""
    JobInstance.objects.filter(id=instance_id, status=JobStatus.FINALIZE, reducer_attempts=attempt).update(
        reducer_lease_expires_at=Now(),
        update_time=Now(),
        error_message=f"the reduction ran longer than its maximum of {max_seconds:g} s (BATCH_MAX_CHUNK_SECONDS): "
        "taken as hung",
    )
    logger.error("job %s: reduction attempt %d overran its maximum of %g s", instance_id, attempt, max_seconds)


def run_reduction(definition: JobDefinition, instance: JobInstance) -> None:
    step = definition.reduction_step
    attempt = instance.reducer_attempts
    max_seconds = definition.max_chunk_seconds or batch_settings().max_chunk_run.total_seconds()
    with (
        lease_keeper.holding(reducer_lease(instance.id, attempt, max_seconds)) as lease,
        chunk_in_hand(instance.id, None, step.id),
    ):
        context = RunningStepContext(
            instance.id,
            step.id,
            None,
            definition.parameters_for_step(instance.parameters),
            None,
            lease,
            attempt=attempt,
        )
        try:
            # A database restart while the inputs are read is no fault of the reduction: it runs again from
            # the start once the database answers (its inputs are still there), under the same lease.
            report = surviving_connection_loss(
                lambda: step.reduce(context, _inputs(instance.id, step.id, context)), f"reducing job {instance.id}"
            )
        except JobCancelled:
            logger.info("job %s: reduction stopped by a cancel", instance.id)
            return
        except Exception as error:
            logger.exception("job %s: reduction step %s raised", instance.id, step.id)
            message = f"Reduction step {step.id} failed: {type(error).__name__}: {error}"
            surviving_connection_loss(
                lambda: on_reduction_failed(instance, attempt, message),
                f"recording the failed reduction of job {instance.id}",
            )
            return
    if lease.lost:
        return
    surviving_connection_loss(
        lambda: flow.complete_job(instance, definition, only_if=Q(reducer_attempts=attempt), report=dict(report)),
        f"completing job {instance.id}",
    )


def on_reduction_failed(instance: JobInstance, attempt: int, message: str) -> None:
    if change_job_status(
        instance.id,
        JobStatus.FAILED,
        only_if=Q(reducer_attempts=attempt),
        error_message=message,
        end_time=database_now(),
        reducer_lease_expires_at=None,
    ):
        flow.call_stop_handler(instance.id)


def _inputs(instance_id: UUID, step_id: str, context: RunningStepContext) -> Iterator[dict[str, Any]]:
    """The chunks emitted for the reduction, in emission order, read page by page (keyset)."""
    chunks = WorkChunk.objects.filter(
        instance_id=instance_id, target_step_id=step_id, status=ChunkStatus.REDUCTION_READY
    ).order_by("create_time", "sequence", "id")
    after = Q()
    while True:
        page = list(chunks.filter(after).values_list("create_time", "sequence", "id", "data")[:INPUT_PAGE])
        for *_, data in page:
            yield data
        if len(page) < INPUT_PAGE:
            return
        context.check_cancelled()
        created, sequence, chunk_id, _ = page[-1]
        after = (
            Q(create_time__gt=created)
            | Q(create_time=created, sequence__gt=sequence)
            | Q(create_time=created, sequence=sequence, id__gt=chunk_id)
        )
