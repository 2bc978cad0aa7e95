"""The delete-expunge as plain functions: who may, start one, its status, cancel it.

The views and the `delete_expunge` command are thin over these. A client (not an operator) sees and cancels
only the jobs it started; another's is "not found", as an unknown one.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from django.conf import settings

from batch import control
from batch.control import InvalidParameters, JobSnapshot
from fhirjobs.common.status import State, cancel_owned_job, job_status, owned_job
from fhirjobs.deleteexpunge.definition import DELETE_EXPUNGE, DELETE_EXPUNGE_JOB
from fhirjobs.deleteexpunge.exceptions import (
    DeleteExpungeFailed,
    DeleteExpungeNotFound,
    DeleteExpungeRefused,
    InvalidDeleteExpungeRequest,
)
from fhirjobs.deleteexpunge.parameters import DeleteExpungeRequest
from fhirjobs.deleteexpunge.steps import REFUSED
from fhirstore.expunge import referrals_into_matches, refuse_if_referenced

DELETE_EXPUNGE_PERMISSION = "deleteexpunge.delete_expunge"


@dataclass(frozen=True)
class DeleteExpungeStatus:
    state: State  # RUNNING or COMPLETED: the other states are errors
    progress: str
    report: dict | None = None


def may_delete_expunge(user) -> bool:
    """Staff, or a user granted `deleteexpunge.delete_expunge`: the resources go for good."""
    return bool(user and user.is_authenticated and (user.is_staff or user.has_perm(DELETE_EXPUNGE_PERMISSION)))


def start_delete_expunge(request: DeleteExpungeRequest, *, started_by: str) -> JobSnapshot:
    """Start a DELETE_EXPUNGE job. Without cascade, ResourceReferenced (409, naming them) when resources the
    urls do not match refer to ones they match; InvalidDeleteExpungeRequest when the parameters are not valid."""
    try:
        DELETE_EXPUNGE.validate_parameters(request.job_parameters())  # before the urls are searched below
    except InvalidParameters as error:
        raise InvalidDeleteExpungeRequest(list(error.problems)) from None
    if not request.cascade:
        refuse_if_referenced(referrals_into_matches(request.urls))
    try:
        return control.start_job(
            DELETE_EXPUNGE_JOB,
            request.job_parameters(),
            started_by=started_by,
            max_concurrent_chunks=settings.DELETE_EXPUNGE_MAX_CONCURRENT_CHUNKS or None,
        )
    except InvalidParameters as error:
        raise InvalidDeleteExpungeRequest(list(error.problems)) from None


def delete_expunge_status(job_id: uuid.UUID | str, *, started_by: str | None) -> DeleteExpungeStatus:
    """Running or completed (with the report); DeleteExpungeRefused (409) when referrers stopped it,
    DeleteExpungeFailed otherwise, DeleteExpungeNotFound for a cancelled, unknown or foreign one."""
    owned_job(job_id, DELETE_EXPUNGE_JOB, started_by=started_by, not_found=DeleteExpungeNotFound)
    status = job_status(job_id)
    if status.job is None or status.state is State.CANCELLED:
        raise DeleteExpungeNotFound(f"Delete-expunge {job_id} was cancelled or is not known any more")
    if status.state is State.FAILED:
        message = status.job.error_message or "unknown error"
        if REFUSED in message:
            raise DeleteExpungeRefused(message[message.index(REFUSED) + len(REFUSED) :])
        raise DeleteExpungeFailed(f"Delete-expunge {job_id} failed: {message}")
    return DeleteExpungeStatus(
        status.state, status.progress, status.job.report if status.state is State.COMPLETED else None
    )


def cancel_delete_expunge(job_id: uuid.UUID | str, *, started_by: str | None) -> None:
    """Stop deleting: the pages already deleted stay deleted, the rest stay."""
    cancel_owned_job(job_id, DELETE_EXPUNGE_JOB, started_by=started_by, not_found=DeleteExpungeNotFound)
