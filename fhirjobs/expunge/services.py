"""`$expunge` as plain functions: who may, an instance now, a type or the system as a job, its status and cancel."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import transaction

from batch import control
from batch.control import InvalidParameters, JobSnapshot
from fhirjobs.common.snapshots import snapshot_reader_in_the_way
from fhirjobs.common.status import State, cancel_owned_job, operation_status, owned_job
from fhirjobs.expunge.definition import EXPUNGE_JOB
from fhirjobs.expunge.exceptions import ExpungeBusy, ExpungeFailed, ExpungeNotFound, InvalidExpungeRequest
from fhirjobs.expunge.parameters import ExpungeRequest
from fhirstore.exceptions import ResourceNotFound
from fhirstore.expunge import expunge_rows
from fhirstore.models import Resource
from fhirstore.snapshots import mark_expunged

EXPUNGE_PERMISSION = "expunge.expunge"


def may_expunge(user) -> bool:
    """Staff, or a user granted `expunge.expunge`: the versions go for good."""
    return bool(user and user.is_authenticated and (user.is_staff or user.has_perm(EXPUNGE_PERMISSION)))


def expunge_instance(resource_type: str, logical_id: str, request: ExpungeRequest) -> int:
    """What the request asks of one resource (deleted or not), now: how many versions went; 404 for an unknown
    one. An export reading the type as at its transactionTime comes first: ExpungeBusy (retry later)."""
    key = Resource.objects.filter(resource_type=resource_type, logical_id=logical_id).values_list("id", flat=True)
    if not key:
        raise ResourceNotFound(f"{resource_type}/{logical_id} is not known")
    with transaction.atomic():
        if reader := snapshot_reader_in_the_way([resource_type], locked=True):
            raise ExpungeBusy(f"{reader}; retry later")
        versions = expunge_rows(list(key), request.kinds, limit=request.limit)
        if versions:
            mark_expunged([resource_type])
        return versions


def start_expunge(resource_type: str | None, request: ExpungeRequest, *, started_by: str) -> JobSnapshot:
    """An EXPUNGE job over a type, or over every stored type (None: the system level)."""
    try:
        return control.start_job(
            EXPUNGE_JOB,
            {
                "urls": [f"{resource_type}?"] if resource_type else [],
                "deleted_resources": request.kinds.deleted,
                "previous_versions": request.kinds.previous,
                "everything": request.kinds.everything,
                "limit": request.limit,
            },
            started_by=started_by,
            max_concurrent_chunks=settings.DELETE_EXPUNGE_MAX_CONCURRENT_CHUNKS or None,
        )
    except InvalidParameters as error:
        raise InvalidExpungeRequest("; ".join(error.problems)) from None


def expunge_status(job_id: uuid.UUID | str, *, started_by: str | None) -> tuple[State, str, int | None]:
    """(RUNNING, progress, None) or (COMPLETED, "", versions removed); ExpungeNotFound / ExpungeFailed else."""
    owned_job(job_id, EXPUNGE_JOB, started_by=started_by, not_found=ExpungeNotFound)
    status = operation_status(job_id, "Expunge", not_found=ExpungeNotFound, failed=ExpungeFailed)
    if status.state is State.COMPLETED:
        return State.COMPLETED, "", status.job.report["count"]
    return State.RUNNING, status.progress, None


def cancel_expunge(job_id: uuid.UUID | str, *, started_by: str | None) -> None:
    """Stop: the pages done stay done."""
    cancel_owned_job(job_id, EXPUNGE_JOB, started_by=started_by, not_found=ExpungeNotFound)
