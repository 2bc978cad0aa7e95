"""The bulk patch as plain functions: who may, start one, its status, cancel it.

The views are thin over these. A client (not an operator) sees and cancels only the jobs it started; another's
is "not found", as an unknown one.
"""

from __future__ import annotations

import uuid
from typing import Any

from batch import control
from batch.control import InvalidParameters, JobSnapshot
from fhirjobs.bulkpatch.definition import BULK_PATCH_JOB
from fhirjobs.bulkpatch.exceptions import BulkPatchFailed, BulkPatchNotFound, InvalidBulkPatchRequest
from fhirjobs.common.status import State, cancel_owned_job, operation_status, owned_job

BULK_PATCH_PERMISSION = "bulkpatch.bulk_patch"


def may_bulk_patch(user) -> bool:
    """Staff, or a user granted `bulkpatch.bulk_patch`: one request changes every resource a search matches."""
    return bool(user and user.is_authenticated and (user.is_staff or user.has_perm(BULK_PATCH_PERMISSION)))


def start_bulk_patch(parameters: dict[str, Any], *, started_by: str) -> JobSnapshot:
    """Start a BULK_PATCH job; InvalidBulkPatchRequest (400) listing every problem of its parameters."""
    try:
        return control.start_job(BULK_PATCH_JOB, parameters, started_by=started_by)
    except InvalidParameters as error:
        raise InvalidBulkPatchRequest("; ".join(error.problems)) from None


def bulk_patch_status(job_id: uuid.UUID | str, *, started_by: str | None) -> tuple[State, str, dict | None]:
    """(RUNNING, progress, None) or (COMPLETED, "", the report); BulkPatchNotFound / BulkPatchFailed else."""
    owned_job(job_id, BULK_PATCH_JOB, started_by=started_by, not_found=BulkPatchNotFound)
    status = operation_status(job_id, "Bulk patch", not_found=BulkPatchNotFound, failed=BulkPatchFailed)
    if status.state is State.COMPLETED:
        return State.COMPLETED, "", status.job.report
    return State.RUNNING, status.progress, None


def cancel_bulk_patch(job_id: uuid.UUID | str, *, started_by: str | None) -> None:
    """Stop patching: the pages already patched stay patched, the rest stay as they were."""
    cancel_owned_job(job_id, BULK_PATCH_JOB, started_by=started_by, not_found=BulkPatchNotFound)
