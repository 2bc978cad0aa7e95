"""A job's snapshot as the status URL of an asynchronous FHIR operation answers it.

Each job keeps its own row (a `BulkExport`, a `BulkImport`) that names its batch job; its status URL asks
`job_status` where that job is, answers 202 with `progress` as `X-Progress` while it runs, and makes the
failed, cancelled and forgotten cases its own errors (an export deletes its files, an import keeps them).
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass

from django.core.exceptions import ValidationError

from batch import control
from batch.control import JobNotFound, JobSnapshot, JobStatus


class State(enum.Enum):
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"  # also: purged by the engine, or never known


@dataclass(frozen=True)
class AsyncJobStatus:
    state: State
    progress: str  # X-Progress while running: short, for people
    job: JobSnapshot | None  # None when the engine does not know the job (any more)


def job_status(job_instance_id: uuid.UUID | str) -> AsyncJobStatus:
    try:
        job = control.get_job(job_instance_id)
    except JobNotFound:
        return AsyncJobStatus(State.CANCELLED, "", None)
    if job.status == JobStatus.CANCELLED:
        return AsyncJobStatus(State.CANCELLED, "", job)
    if job.status == JobStatus.FAILED:
        return AsyncJobStatus(State.FAILED, "", job)
    if job.status == JobStatus.COMPLETED:
        return AsyncJobStatus(State.COMPLETED, "Completed", job)
    return AsyncJobStatus(State.RUNNING, progress(job), job)


def owned_job(
    job_instance_id: uuid.UUID | str, definition_id: str, *, started_by: str | None, not_found: type[Exception]
) -> JobSnapshot:
    """The job, if it is a `definition_id` job of this owner (anyone's for None); `not_found` otherwise, so that
    another's job, a job of another kind and a malformed id all read as an unknown one."""
    try:
        job = control.get_job(job_instance_id, started_by=started_by)
    except (JobNotFound, ValueError, ValidationError):
        raise not_found() from None
    if job.definition_id != definition_id:
        raise not_found()
    return job


def cancel_owned_job(
    job_instance_id: uuid.UUID | str, definition_id: str, *, started_by: str | None, not_found: type[Exception]
) -> None:
    """Cancel the job if it is a `definition_id` job of this owner: a status URL's DELETE cancels only the kind of
    job its operation starts, never another job of the same user; `not_found` otherwise, or when the job ended
    and was forgotten meanwhile."""
    owned_job(job_instance_id, definition_id, started_by=started_by, not_found=not_found)
    try:
        control.cancel_job(job_instance_id, started_by=started_by)
    except JobNotFound:
        raise not_found() from None


def operation_status(
    job_instance_id: uuid.UUID | str, noun: str, *, not_found: type[Exception], failed: type[Exception]
) -> AsyncJobStatus:
    """The status of a job an operation started, as its status URL answers it: running or completed; a
    cancelled or forgotten one raises `not_found`, a failed one `failed`, each naming the job in a sentence
    that begins with `noun` ("Bulk patch")."""
    status = job_status(job_instance_id)
    if status.job is None or status.state is State.CANCELLED:
        raise not_found(f"{noun} {job_instance_id} was cancelled or is not known any more")
    if status.state is State.FAILED:
        raise failed(f"{noun} {job_instance_id} failed: {status.job.error_message or 'unknown error'}")
    return status


def progress(job: JobSnapshot) -> str:
    """`X-Progress`: queued, or the current step, how many of its chunks are done and the records so far."""
    if job.status == JobStatus.QUEUED:
        return "Queued"
    number, count, step_id = job.current_step_number, job.step_count, job.current_step
    if job.status == JobStatus.FINALIZE:
        return f"{step_id} (step {number} of {count})"
    step = job.step(step_id or "")
    return (
        f"{step_id}: {step.done} of {step.total} chunks done (step {number} of {count}), "
        f"{job.combined_records_processed} records"
    )
