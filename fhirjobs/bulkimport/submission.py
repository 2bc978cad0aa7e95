"""Bulk Data 4.0's `$bulk-submit` as plain functions: a provider submits `$export` manifests, each becomes a
BULK_IMPORT (`services.kick_off`), and the submission's status gathers theirs into a manifest of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from batch import control
from batch.control import JobNotFound, JobStateConflict
from fhirjobs.bulkimport.exceptions import ImportFailed, ImportNotFound, InvalidSubmission
from fhirjobs.bulkimport.models import BulkSubmission
from fhirjobs.bulkimport.parameters import ImportRequest, SubmitRequest
from fhirjobs.bulkimport.services import kick_off, status_of
from fhirjobs.common.status import State
from fhirstore.authority import WriteAuthority


def submit(
    user: AbstractBaseUser, request: SubmitRequest, *, authority: WriteAuthority, base_url: str
) -> BulkSubmission:
    """`$bulk-submit`: add manifests to a submission (each becomes a BULK_IMPORT job) or change its status.

    An aborted submission cancels the imports it started."""
    with transaction.atomic():
        submission, _ = BulkSubmission.objects.select_for_update().get_or_create(
            submitter=request.submitter, submission_id=request.submission_id, defaults={"owner": user}
        )
        if submission.owner_id != user.pk:
            raise ImportNotFound("This submission belongs to another user")
        if submission.status != "in-progress" and request.manifest_urls:
            raise InvalidSubmission(f"Submission {request.submission_id} is {submission.status}: no more manifests")
        known = set(submission.imports.values_list("manifest_url", flat=True))
        for manifest_url in request.manifest_urls:
            if manifest_url not in known:  # a repeated request adds nothing
                kick_off(
                    user,
                    ImportRequest(headers=request.headers, manifest_url=manifest_url),
                    authority=authority,
                    base_url=base_url,
                    request_url=manifest_url,
                    submission=submission,
                )
        submission.status = request.status
        submission.save(update_fields=["status"])
        if request.status == "entered-in-error":
            for job_instance_id in submission.imports.values_list("job_instance_id", flat=True):
                try:
                    control.cancel_job(job_instance_id)
                except (JobStateConflict, JobNotFound):
                    pass
    return submission


@dataclass(frozen=True)
class SubmissionStatus:
    state: State  # RUNNING or COMPLETED: the other states are errors
    progress: str
    manifest: dict[str, Any] | None = None


def submission_status(user: AbstractBaseUser, submitter: str, submission_id: str) -> SubmissionStatus:
    """Running until the provider marked it completed and every import ended; then a status manifest."""
    submission = BulkSubmission.objects.filter(
        submitter=submitter, submission_id=submission_id, owner_id=user.pk
    ).first()
    if submission is None:
        raise ImportNotFound(f"Submission {submission_id} of {submitter} is not known")
    imports = list(submission.imports.order_by("created"))
    outputs, errors, running = [], [], 0
    for bulk_import in imports:
        try:
            status = status_of(bulk_import)
        except (ImportFailed, ImportNotFound) as error:
            errors.append(
                {"type": "OperationOutcome", "manifestUrl": bulk_import.manifest_url, "diagnostics": error.message}
            )
            continue
        if status.state is State.RUNNING:
            running += 1
            continue
        for resource_type, counts in status.report["counts"].items():
            outputs.append(
                {
                    "type": resource_type,
                    "manifestUrl": bulk_import.manifest_url,
                    "count": counts["loaded"] + counts["unchanged"],
                }
            )
        if status.report.get("error_file"):
            errors.append(
                {
                    "type": "OperationOutcome",
                    "url": status.report["error_file"],
                    "manifestUrl": bulk_import.manifest_url,
                    "count": status.report["errors"],
                }
            )
    if submission.status == "in-progress" or running:
        return SubmissionStatus(
            State.RUNNING,
            f"{len(imports) - running} of {len(imports)} manifests imported"
            + ("" if submission.status != "in-progress" else "; the submission is open"),
        )
    return SubmissionStatus(
        State.COMPLETED,
        "Completed",
        {
            "transactionTime": submission.created.isoformat(),
            "submissionId": submission.submission_id,
            "submitter": submission.submitter,
            "status": submission.status,
            "requiresAccessToken": True,
            "output": outputs,
            "error": errors,
        },
    )
