"""The control surface of the batch engine: start, cancel, restart, list and watch jobs.

With `batch.api` (defining jobs) and `batch.testing` (running them in a test), this is all code outside
the engine may touch: the FHIR jobs, the control API, the commands and the admin's actions. Jobs come
back as `JobSnapshot`s, frozen read models, never as database rows, so callers cannot write around the
engine's state machine and the engine can change its tables without breaking them.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TextIO, overload
from uuid import UUID, uuid4

from django.conf import settings
from django.db import transaction
from django.db.models import (
    Count,
    DurationField,
    ExpressionWrapper,
    F,
    FloatField,
    Func,
    Max,
    Q,
    QuerySet,
    Sum,
    Value,
)
from django.db.models.functions import Coalesce, Now

from batch import flow
from batch.exceptions import (
    BatchError,
    InvalidParameters,
    JobNotFound,
    JobStateConflict,
    NoLiveNode,
    UnknownJobDefinition,
)
from batch.heartbeats import LiveNode, LiveWorker, live_nodes, live_workers, node_for_new_job
from batch.models import JobInstance, WorkChunk
from batch.nodes import Reassignment, reassign_jobs
from batch.progress import StepTotals, compute_progress, describe_duration, settle_totals, step_totals
from batch.registry import registry
from batch.statuses import (
    ENDED_JOB_STATUSES,
    RESTARTABLE_JOB_STATUSES,
    UNFINISHED_CHUNK_STATUSES,
    UNFINISHED_JOB_STATUSES,
    ChunkStatus,
    JobStatus,
)
from batch.transitions import change_all_chunks_status, change_job_status, database_now

# Chunks a restart issues again; COMPLETED ones stay done, GATE_WAITING ones wait for their gate.
REISSUED_CHUNK_STATUSES = [
    ChunkStatus.QUEUED,
    ChunkStatus.IN_PROGRESS,
    ChunkStatus.ERRORED,
    ChunkStatus.FAILED,
    ChunkStatus.POLL_WAITING,
]

# The time between the job's end (FAILED or CANCELLED) and its restart, by the database's clock: not running time.
PAUSED_SECONDS_AFTER_RESTART = F("paused_seconds") + Coalesce(
    Func(
        ExpressionWrapper(Now() - F("end_time"), output_field=DurationField()),
        template="EXTRACT(EPOCH FROM %(expressions)s)",
        output_field=FloatField(),
    ),
    Value(0.0),
)

__all__ = [
    "BatchError",
    "InvalidParameters",
    "JobList",
    "JobNotFound",
    "JobSnapshot",
    "JobStateConflict",
    "JobStatus",
    "ChunkWorker",
    "StepProgress",
    "UnknownJobDefinition",
    "cancel_job",
    "chunk_workers",
    "describe_duration",
    "ended_job_ids",
    "follow_job",
    "get_job",
    "job_ids",
    "list_jobs",
    "restart_job",
    "retry_failed_chunks",
    "start_job",
    "unfinished_job_ids",
    "watch_job",
    # nodes (batch.heartbeats, batch.nodes): which have live workers, and moving jobs between them
    "LiveNode",
    "LiveWorker",
    "NoLiveNode",
    "Reassignment",
    "live_nodes",
    "live_workers",
    "reassign_jobs",
]


# One step of a job: its chunks by status, records, failed attempts, first start and last end.
StepProgress = StepTotals


@dataclass(frozen=True)
class JobSnapshot:
    """A job as it was when read. Field names follow the reference's JobInstance (snake_case)."""

    id: UUID
    definition_id: str
    definition_version: int
    status: JobStatus
    cancelled: bool
    parameters: Mapping[str, Any]
    started_by: str
    node_id: str
    module_id: str
    max_concurrent_chunks: int | None
    create_time: datetime
    start_time: datetime | None
    end_time: datetime | None
    update_time: datetime
    progress: float  # 0..1, by chunks (ungated) or by each step's pace (gated): batch.progress
    combined_records_processed: int
    records_per_second: float | None
    elapsed_seconds: float | None
    estimated_seconds_remaining: float | None
    error_count: int
    error_message: str | None
    warning_messages: str | None
    current_gated_step_id: str | None
    report: Any
    steps: tuple[StepProgress, ...]  # every step of the definition, in order, then any unknown to it
    records_step_id: str | None = None  # whose records are the job's (None: the definition is not registered)

    @property
    def ended(self) -> bool:
        return self.status in ENDED_JOB_STATUSES

    @property
    def step_count(self) -> int:
        return len(self.steps)

    @property
    def current_step(self) -> str | None:
        """The gated step, or else the first step with unfinished chunks; None once the job has ended."""
        if self.ended:
            return None
        if self.current_gated_step_id:
            return self.current_gated_step_id
        for step in self.steps:
            if step.done < step.total:
                return step.step_id
        return self.steps[-1].step_id if self.steps else None

    @property
    def current_step_number(self) -> int | None:
        """1-based position of `current_step` among the steps."""
        current = self.current_step
        return next((number for number, step in enumerate(self.steps, 1) if step.step_id == current), None)

    @property
    def completed_chunks(self) -> int:
        return sum(step.done for step in self.steps)

    @property
    def chunk_count(self) -> int:
        return sum(step.total for step in self.steps)

    def step(self, step_id: str) -> StepProgress:
        return next((step for step in self.steps if step.step_id == step_id), StepProgress(step_id, {}))


def start_job(
    definition_id: str,
    parameters: Mapping[str, Any] | None = None,
    *,
    started_by: str = "",
    node_id: str | None = None,
    module_id: str | None = None,
    max_concurrent_chunks: int | None = None,
    instance_id: UUID | None = None,
) -> JobSnapshot:
    """Validate the parameters, then write the QUEUED job and its first, data-less chunk, announced after the
    commit. `InvalidParameters` (listing every problem) or `UnknownJobDefinition` leave nothing written. Call
    inside the caller's transaction to start the job only if that transaction commits.

    `instance_id`: the job's id chosen by the caller (a fresh UUID), so that the id a client is given for its
    request (an `$export`'s `_jobId`) is the job's id on every operator surface too."""
    definition = registry.latest(definition_id)
    problems: list[str] = []
    values: dict[str, Any] = {}
    try:
        values = definition.validate_parameters(parameters)
    except InvalidParameters as invalid:
        problems += invalid.problems
    if max_concurrent_chunks is not None and (
        isinstance(max_concurrent_chunks, bool)
        or not isinstance(max_concurrent_chunks, int)
        or max_concurrent_chunks < 1
    ):
        problems.append(f"max concurrent chunks must be a positive integer, got {max_concurrent_chunks!r}")
    if problems:
        raise InvalidParameters(problems)
    first_step = definition.first_step
    with transaction.atomic():
        instance = JobInstance.objects.create(
            id=instance_id or uuid4(),
            definition_id=definition.id,
            definition_version=definition.version,
            status=JobStatus.QUEUED,
            parameters=values,
            started_by=started_by[:150],
            node_id=node_id or node_for_new_job(module_id),
            module_id=module_id or settings.MODULE_ID,
            max_concurrent_chunks=max_concurrent_chunks or definition.max_concurrent_chunks,
            current_gated_step_id=first_step.id if definition.gated else None,
        )
        WorkChunk.objects.create(
            instance=instance,
            definition_id=definition.id,
            definition_version=definition.version,
            target_step_id=first_step.id,
            sequence=0,
            status=ChunkStatus.READY,
            data=None,
        )
        flow.enqueue_ready_chunks(instance)
    return _snapshot(instance)


def get_job(job_id: UUID | str, *, started_by: str | None = None) -> JobSnapshot:
    """`JobNotFound` for an unknown id, or, when `started_by` is given, for another user's job: a
    client cannot tell the two apart. Progress figures are computed from the chunks now, not read from
    the job row that maintenance refreshes every few seconds."""
    instance = _owned(job_id, started_by)
    fields = compute_progress(instance.id).as_fields()
    if instance.status in ENDED_JOB_STATUSES:
        del fields["error_message"]  # the one its ending wrote ("cancelled at step …", "Too many errors …") stays
    for name, value in fields.items():
        setattr(instance, name, value)
    return _snapshot(instance)


def cancel_job(job_id: UUID | str, *, started_by: str | None = None) -> JobSnapshot:
    """CANCELLED at once; a running step notices within about a second and its chunk is released.
    `JobNotFound`, or `JobStateConflict` when the job has ended already."""
    instance = _owned(job_id, started_by)
    step = _current_step(instance)
    cancelled = change_job_status(
        instance.id,
        JobStatus.CANCELLED,
        cancelled=True,
        end_time=database_now(),
        error_message=f"Job instance cancelled at step {step}",
    )
    if cancelled:
        settle_totals(instance.id)
        flow.call_stop_handler(instance.id)
    instance.refresh_from_db()
    if not cancelled:
        raise JobStateConflict(f"job {instance.id} has already ended: it is {instance.status}")
    return get_job(instance.id)


def restart_job(job_id: UUID | str, *, started_by: str | None = None) -> JobSnapshot:
    """Resume a FAILED or CANCELLED job where it stopped: completed chunks stay done, the others run again
    with fresh error counts. `JobNotFound`, or `JobStateConflict` for a job in any other status."""
    instance = _owned(job_id, started_by)
    if instance.status not in RESTARTABLE_JOB_STATUSES:
        raise JobStateConflict(
            f"only FAILED or CANCELLED jobs can be restarted; job {instance.id} is {instance.status}"
        )
    try:
        definition = registry.get(instance.definition_id, instance.definition_version)
    except UnknownJobDefinition as unknown:
        raise JobStateConflict(f"job {instance.id} cannot be restarted: {unknown}") from None
    reissued = Q(instance_id=instance.id, status__in=REISSUED_CHUNK_STATUSES)
    if definition.reduction_step is not None:
        reissued &= ~Q(target_step_id=definition.reduction_step.id)
    with transaction.atomic():
        restarted = change_job_status(
            instance.id,
            JobStatus.IN_PROGRESS,
            cancelled=False,
            end_time=None,
            error_message=None,
            start_time=instance.start_time or database_now(),
            reducer_lease_expires_at=None,
            reducer_attempts=0,
            paused_seconds=PAUSED_SECONDS_AFTER_RESTART,
        )
        if not restarted:
            instance.refresh_from_db()
            raise JobStateConflict(f"job {instance.id} is {instance.status} now; it was not restarted")
        change_all_chunks_status(
            reissued, ChunkStatus.READY, error_count=0, error_message=None, lease_expires_at=None, next_poll_time=None
        )
    flow.call_restart_handler(instance.id)
    instance.refresh_from_db()
    flow.enqueue_ready_chunks(instance)
    flow.advance_job(instance.id)
    return get_job(instance.id)


def list_jobs(
    statuses: Iterable[str] = (), *, started_by: str | None = None, definition_ids: Iterable[str] = ()
) -> JobList:
    """Newest first, as a lazy sequence: slice it (Django's and DRF's paginators do) to read a page."""
    jobs = JobInstance.objects.order_by("-create_time", "id")
    statuses = list(statuses)
    if statuses:
        jobs = jobs.filter(status__in=statuses)
    if started_by is not None:
        jobs = jobs.filter(started_by=started_by)
    definition_ids = list(definition_ids)
    if definition_ids:
        jobs = jobs.filter(definition_id__in=definition_ids)
    return JobList(jobs)


def watch_job(job_id: UUID | str, every: float = 0.5) -> Iterator[JobSnapshot]:
    """A fresh snapshot every `every` seconds until the job has ended (the last one is the ended job)."""
    while True:
        snapshot = get_job(job_id)
        yield snapshot
        if snapshot.ended:
            return
        time.sleep(every)


def follow_job(job_id: UUID | str, out: TextIO, timeout: float | None = None) -> JobSnapshot:
    """Draw a progress bar (chunks done, records, rate, ETA) on a terminal until the job ends; return the
    ended job. `JobStateConflict` when it has not ended within `timeout` seconds."""
    from tqdm import tqdm  # only commands draw bars; web processes never import it

    deadline = time.monotonic() + timeout if timeout is not None else None
    with tqdm(
        total=1,
        unit="chunk",
        file=out,
        dynamic_ncols=True,
        bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} chunks [{elapsed}{postfix}]",
    ) as bar:
        for snapshot in watch_job(job_id):
            bar.total = max(snapshot.chunk_count, 1)
            bar.n = snapshot.completed_chunks
            rate = f"{snapshot.records_per_second:.1f}" if snapshot.records_per_second else "-"
            bar.set_postfix_str(
                f"{snapshot.status} {snapshot.combined_records_processed} records, {rate} rec/s, "
                f"ETA {describe_duration(snapshot.estimated_seconds_remaining)}"
            )
            if deadline is not None and time.monotonic() > deadline and not snapshot.ended:
                raise JobStateConflict(f"job {job_id} did not end within {timeout:.0f}s (is a worker running?)")
    return snapshot


@dataclass(frozen=True)
class ChunkWorker:
    """A worker process that ran chunks of a job, and what it did for it. A chunk keeps the last worker that
    claimed it (`WorkChunk.worker`), so a chunk retried elsewhere counts for the worker of its last attempt."""

    worker: str  # Celery's hostname and the pool process's pid, as claimed: "celery@host-b/4242"
    chunks: Mapping[str, int]  # its chunks of the job by status
    records: int  # records those chunks processed
    last_update: datetime  # its latest chunk's last change, on the database's clock

    @property
    def host(self) -> str:
        """The host part of the Celery hostname (`name@host`): what tells machines apart."""
        return self.worker.partition("@")[2].rpartition("/")[0] or self.worker


def chunk_workers(job_id: UUID | str) -> list[ChunkWorker]:
    """Every worker that ran (or runs) a chunk of the job, by worker name: where the job ran, host by host."""
    rows = (
        WorkChunk.objects.filter(instance_id=job_id)
        .exclude(worker="")
        .order_by()
        .values_list("worker", "status")
        .annotate(count=Count("*"), records=Sum("records_processed"), last=Max("update_time"))
    )
    chunks: dict[str, dict[str, int]] = defaultdict(dict)
    records: dict[str, int] = defaultdict(int)
    last: dict[str, datetime] = {}
    for worker, status, count, processed, updated in rows:
        chunks[worker][status] = count
        records[worker] += processed or 0
        last[worker] = max(last.get(worker, updated), updated)
    return [ChunkWorker(worker, chunks[worker], records[worker], last[worker]) for worker in sorted(chunks)]


def discard_chunk_data(job_ids: Iterable[UUID | str] | QuerySet) -> int:
    """Clear the data of every chunk of these jobs that have ended; returns how many chunks held some.

    Completed chunks lose their data anyway; this is for the chunks a FAILED or CANCELLED job leaves behind,
    when their data must not stay until the job is purged (an export's patient data, say). Such a job can no
    longer be restarted where it stopped: its unfinished chunks have nothing left to work on."""
    ended = JobInstance.objects.filter(id__in=job_ids, status__in=ENDED_JOB_STATUSES).values("id")
    return WorkChunk.objects.filter(instance_id__in=ended, data__isnull=False).update(data=None)


# Sets of job ids, as lazy subqueries: `Model.objects.filter(job_id__in=unfinished_job_ids())` is one query.
def unfinished_job_ids() -> QuerySet:
    """Ids of jobs not yet ended (QUEUED, IN_PROGRESS, FINALIZE)."""
    return JobInstance.objects.filter(status__in=UNFINISHED_JOB_STATUSES).values("id")


def ended_job_ids(*, before: datetime | None = None) -> QuerySet:
    """Ids of jobs that ended (COMPLETED, FAILED, CANCELLED): before `before`, or at any time."""
    if before is None:
        return JobInstance.objects.filter(status__in=ENDED_JOB_STATUSES).values("id")
    return JobInstance.objects.filter(end_time__lt=before).values("id")


def completed_job_ids() -> QuerySet:
    """Ids of jobs that COMPLETED."""
    return JobInstance.objects.filter(status=JobStatus.COMPLETED).values("id")


def job_ids() -> QuerySet:
    """Ids of every job the engine still knows."""
    return JobInstance.objects.values("id")


class JobList(Sequence[JobSnapshot]):
    """Jobs newest first; reading a slice costs two queries, whatever its length."""

    def __init__(self, jobs: QuerySet[JobInstance]):
        self._jobs = jobs

    def count(self, value: Any = None) -> int:  # Paginator calls count() with no argument
        return self._jobs.count()

    def __len__(self) -> int:
        return self.count()

    @overload
    def __getitem__(self, index: int) -> JobSnapshot: ...

    @overload
    def __getitem__(self, index: slice) -> list[JobSnapshot]: ...

    def __getitem__(self, index: int | slice) -> JobSnapshot | list[JobSnapshot]:
        if isinstance(index, int):
            return self[index : index + 1][0]
        return _snapshots(list(self._jobs[index]))


def _owned(job_id: UUID | str, started_by: str | None) -> JobInstance:
    try:
        instance = JobInstance.objects.get(id=UUID(str(job_id)))
    except (ValueError, JobInstance.DoesNotExist):
        raise JobNotFound(f"no job instance {job_id}") from None
    if started_by is not None and instance.started_by != started_by:
        raise JobNotFound(f"no job instance {job_id}")
    return instance


def _current_step(instance: JobInstance) -> str:
    """The gated step, or else the earliest step that still has unfinished chunks."""
    if instance.current_gated_step_id:
        return instance.current_gated_step_id
    pending = set(
        WorkChunk.objects.filter(instance_id=instance.id, status__in=UNFINISHED_CHUNK_STATUSES)
        .order_by()
        .values_list("target_step_id", flat=True)
        .distinct()
    )
    try:
        steps = [step.id for step in registry.get(instance.definition_id, instance.definition_version).steps]
    except UnknownJobDefinition:
        steps = sorted(pending)
    return next((step for step in steps if step in pending), steps[-1] if steps else "unknown")


def _snapshot(instance: JobInstance) -> JobSnapshot:
    return _snapshots([instance])[0]


def _snapshots(instances: list[JobInstance]) -> list[JobSnapshot]:
    """Snapshots of the jobs with their per-step totals, read in one grouped query."""
    totals = step_totals(instance.id for instance in instances)
    return [_to_snapshot(instance, totals.get(instance.id, {})) for instance in instances]


def _to_snapshot(instance: JobInstance, steps: Mapping[str, StepTotals]) -> JobSnapshot:
    try:
        definition = registry.get(instance.definition_id, instance.definition_version)
        order, records_step_id = [step.id for step in definition.steps], definition.records_step_id
    except UnknownJobDefinition:
        order, records_step_id = [], None
    order += sorted(set(steps) - set(order))
    return JobSnapshot(
        id=instance.id,
        definition_id=instance.definition_id,
        definition_version=instance.definition_version,
        status=JobStatus(instance.status),
        cancelled=instance.cancelled,
        parameters=instance.parameters,
        started_by=instance.started_by,
        node_id=instance.node_id,
        module_id=instance.module_id,
        max_concurrent_chunks=instance.max_concurrent_chunks,
        create_time=instance.create_time,
        start_time=instance.start_time,
        end_time=instance.end_time,
        update_time=instance.update_time,
        progress=instance.progress,
        combined_records_processed=instance.combined_records_processed,
        records_per_second=instance.records_per_second,
        elapsed_seconds=instance.elapsed_seconds,
        estimated_seconds_remaining=instance.estimated_seconds_remaining,
        error_count=instance.error_count,
        error_message=instance.error_message,
        warning_messages=instance.warning_messages,
        current_gated_step_id=instance.current_gated_step_id,
        report=instance.report,
        steps=tuple(steps.get(step_id, StepTotals(step_id)) for step_id in order),
        records_step_id=records_step_id,
    )


def retry_failed_chunks(
    job_id: UUID | str, chunk_ids: Iterable[UUID | str] | None = None, *, started_by: str | None = None
) -> int:
    """Run failed chunks again now (all of the job's, or those of `chunk_ids`); returns how many.

    A running job's ERRORED chunks (waiting out their retry backoff) are announced again at once, ahead of new
    work; the backoff's own message, arriving later, finds them taken. A FAILED or CANCELLED job is restarted
    where it stopped, which runs its failed chunks again (and any other unfinished one). `JobNotFound`, or
    `JobStateConflict` when there is nothing to retry."""
    instance = _owned(job_id, started_by)
    if instance.status in RESTARTABLE_JOB_STATUSES:
        again = WorkChunk.objects.filter(instance_id=instance.id).exclude(status=ChunkStatus.COMPLETED).count()
        restart_job(instance.id)
        return again
    errored = WorkChunk.objects.filter(instance_id=instance.id, status=ChunkStatus.ERRORED)
    if chunk_ids is not None:
        errored = errored.filter(id__in=[UUID(str(chunk_id)) for chunk_id in chunk_ids])
    with transaction.atomic():
        chunks = list(errored.select_for_update(skip_locked=True).values_list("id", "target_step_id"))
        if not chunks:
            raise JobStateConflict(f"job {instance.id} has no chunk waiting to be retried")
        WorkChunk.objects.filter(id__in=[chunk_id for chunk_id, _ in chunks], status=ChunkStatus.ERRORED).update(
            announced_at=Now()
        )
        flow.announce_chunks(instance, chunks, again=True)
    return len(chunks)
