"""Coordinator services: start, cancel and restart jobs, and look them up.

The control API, the management commands and the admin are thin wrappers over these functions.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any
from uuid import UUID, uuid4

from django.conf import settings
from django.db import transaction
from django.db.models import DurationField, ExpressionWrapper, F, FloatField, Func, Q, QuerySet, Value
from django.db.models.functions import Coalesce, Now

from batch import flow
from batch.exceptions import InvalidParameters, JobNotFound, JobStateConflict, UnknownJobDefinition
from batch.heartbeats import node_for_new_job
from batch.models import JobInstance, WorkChunk
from batch.progress import settle_totals
from batch.registry import registry
from batch.statuses import RESTARTABLE_JOB_STATUSES, UNFINISHED_CHUNK_STATUSES, ChunkStatus, JobStatus
from batch.transitions import change_all_chunks_status, change_job_status, database_now

# Chunks a restart issues again; COMPLETED ones stay done, GATE_WAITING ones wait for their gate.
REISSUED_CHUNK_STATUSES = [ChunkStatus.QUEUED, ChunkStatus.IN_PROGRESS, ChunkStatus.ERRORED, ChunkStatus.FAILED,
                           ChunkStatus.POLL_WAITING]


# The time between the job's end (FAILED or CANCELLED) and this restart, by the database's clock: not running time.
PAUSED_SECONDS_AFTER_RESTART = F("paused_seconds") + Coalesce(
    Func(ExpressionWrapper(Now() - F("end_time"), output_field=DurationField()),
         template="EXTRACT(EPOCH FROM %(expressions)s)", output_field=FloatField()),
    Value(0.0))


def start_job(definition_id: str, parameters: Mapping[str, Any] | None = None, *, started_by: str = "",
              node_id: str | None = None, module_id: str | None = None,
              max_concurrent_chunks: int | None = None, instance_id: UUID | None = None) -> JobInstance:
    """Validate, then write the QUEUED instance and its first, data-less chunk, announced after the commit.

    Invalid input raises `InvalidParameters` listing every problem, and nothing is written.
    """
    definition = registry.latest(definition_id)
    problems: list[str] = []
    values: dict[str, Any] = {}
    try:
        values = definition.validate_parameters(parameters)
    except InvalidParameters as invalid:
        problems += invalid.problems
    if max_concurrent_chunks is not None and (
            isinstance(max_concurrent_chunks, bool) or not isinstance(max_concurrent_chunks, int)
            or max_concurrent_chunks < 1):
        problems.append(f"max concurrent chunks must be a positive integer, got {max_concurrent_chunks!r}")
    if problems:
        raise InvalidParameters(problems)
    first_step = definition.first_step
    with transaction.atomic():
        instance = JobInstance.objects.create(
            id=instance_id or uuid4(), definition_id=definition.id, definition_version=definition.version,
            status=JobStatus.QUEUED, parameters=values, started_by=started_by[:150],
            node_id=node_id or node_for_new_job(module_id),
            module_id=module_id or settings.MODULE_ID,
            max_concurrent_chunks=max_concurrent_chunks or definition.max_concurrent_chunks,
            current_gated_step_id=first_step.id if definition.gated else None,
        )
        WorkChunk.objects.create(
            instance=instance, definition_id=definition.id, definition_version=definition.version,
            target_step_id=first_step.id, sequence=0, status=ChunkStatus.READY, data=None,
        )
        flow.enqueue_ready_chunks(instance)
    return instance


def get_job(instance_id: UUID | str) -> JobInstance:
    try:
        return JobInstance.objects.get(id=UUID(str(instance_id)))
    except (ValueError, JobInstance.DoesNotExist):
        raise JobNotFound(f"no job instance {instance_id}") from None


def list_jobs(statuses: Iterable[str] = ()) -> QuerySet[JobInstance]:
    """Newest first; page it (the API and the admin do)."""
    jobs = JobInstance.objects.order_by("-create_time", "id")
    statuses = list(statuses)
    return jobs.filter(status__in=statuses) if statuses else jobs


def cancel_job(instance_id: UUID | str) -> JobInstance:
    """CANCELLED at once; a running step sees it within about a second and stops (its chunk is released).

    Raises `JobNotFound`, or `JobStateConflict` when the job has already ended.
    """
    instance = get_job(instance_id)
    step = _current_step(instance)
    cancelled = change_job_status(instance.id, JobStatus.CANCELLED, cancelled=True, end_time=database_now(),
                                  error_message=f"Job instance cancelled at step {step}")
    if cancelled:
        settle_totals(instance.id)
    instance.refresh_from_db()
    if not cancelled:
        raise JobStateConflict(f"job {instance.id} has already ended: it is {instance.status}")
    return instance


def restart_job(instance_id: UUID | str) -> JobInstance:
    """Resume a FAILED or CANCELLED job where it stopped: COMPLETED chunks stay done, the others run again
    with fresh error counts. Raises `JobNotFound`, or `JobStateConflict` for any other status."""
    instance = get_job(instance_id)
    if instance.status not in RESTARTABLE_JOB_STATUSES:
        raise JobStateConflict(f"only FAILED or CANCELLED jobs can be restarted; job {instance.id} is {instance.status}")
    try:
        definition = registry.get(instance.definition_id, instance.definition_version)
    except UnknownJobDefinition as unknown:
        raise JobStateConflict(f"job {instance.id} cannot be restarted: {unknown}") from None
    reissued = Q(instance_id=instance.id, status__in=REISSUED_CHUNK_STATUSES)
    if definition.reduction_step is not None:
        reissued &= ~Q(target_step_id=definition.reduction_step.id)
    with transaction.atomic():
        restarted = change_job_status(
            instance.id, JobStatus.IN_PROGRESS, cancelled=False, end_time=None, error_message=None,
            start_time=instance.start_time or database_now(), reducer_lease_expires_at=None, reducer_attempts=0,
            paused_seconds=PAUSED_SECONDS_AFTER_RESTART,
        )
        if not restarted:
            instance.refresh_from_db()
            raise JobStateConflict(f"job {instance.id} is {instance.status} now; it was not restarted")
        change_all_chunks_status(reissued, ChunkStatus.READY, error_count=0, error_message=None,
                                 lease_expires_at=None, next_poll_time=None)
    instance.refresh_from_db()
    flow.enqueue_ready_chunks(instance)
    flow.advance_job(instance.id)
    instance.refresh_from_db()
    return instance


def _current_step(instance: JobInstance) -> str:
    """The gated step, or else the earliest step that still has unfinished chunks."""
    if instance.current_gated_step_id:
        return instance.current_gated_step_id
    pending = set(WorkChunk.objects.filter(instance_id=instance.id, status__in=UNFINISHED_CHUNK_STATUSES)
                  .order_by().values_list("target_step_id", flat=True).distinct())
    try:
        steps = [step.id for step in registry.get(instance.definition_id, instance.definition_version).steps]
    except UnknownJobDefinition:
        steps = sorted(pending)
    return next((step for step in steps if step in pending), steps[-1] if steps else "unknown")
