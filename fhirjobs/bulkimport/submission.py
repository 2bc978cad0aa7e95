"""Bulk Data `$bulk-submit` (STU4 ballot) as plain functions: a provider submits `$export` manifests, each becomes
a BULK_IMPORT (`services.kick_off`), and the submission's status gathers theirs into a status manifest.

A submission is `in-progress` until its provider says `completed` (no more manifests) or `stopped` (its imports
are cancelled; what they loaded stays: removing it is not implemented). It is never reopened. One submitter runs
one submission at a time: another submissionId of the same submitter while one is open or importing is a 429.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from batch import control
from batch.control import JobNotFound, JobStateConflict
from fhirjobs.bulkimport.exceptions import (
    ImportFailed,
    ImportNotFound,
    InvalidSubmission,
    SubmitterBusy,
)
from fhirjobs.bulkimport.models import BulkSubmission
from fhirjobs.bulkimport.oauth import client_credentials_token
from fhirjobs.bulkimport.parameters import ImportRequest, SubmitRequest
from fhirjobs.bulkimport.services import kick_off, status_of
from fhirjobs.common.status import State
from fhirstore.authority import WriteAuthority
from fhirstore.fhirdates import format_instant

IN_PROGRESS, COMPLETED, STOPPED = "in-progress", "completed", "stopped"
MANIFEST_TYPE = "http://hl7.org/fhir/uv/bulkdata/StructureDefinition/BulkSubmitStatusManifest"


def submit(
    user: AbstractBaseUser, request: SubmitRequest, *, authority: WriteAuthority, base_url: str
) -> BulkSubmission:
    """`$bulk-submit`: add manifests to a submission (each becomes a BULK_IMPORT job) or change its status.

    SubmitterBusy when another submission of the submitter is running; InvalidSubmission for manifests added
    to an ended submission or an ended one reopened. A stopped submission cancels the imports it started."""
    headers = dict(request.headers)
    if request.oauth_metadata_url and request.manifest_urls:  # a token for this request's fetches, or a 400 now
        headers["Authorization"] = f"Bearer {client_credentials_token(request.oauth_metadata_url)}"
    with transaction.atomic():
        submission, created = BulkSubmission.objects.select_for_update().get_or_create(
            submitter=request.submitter, submission_id=request.submission_id, defaults={"owner": user}
        )
        if submission.owner_id != user.pk:
            raise ImportNotFound("This submission belongs to another user")
        if created:
            _refuse_while_another_runs(submission)
        if submission.status != IN_PROGRESS and (request.manifest_urls or request.status == IN_PROGRESS):
            raise InvalidSubmission(
                f"Submission {request.submission_id} is {submission.status}: it takes no more manifests "
                "and cannot be reopened"
            )
        known = set(submission.imports.values_list("manifest_url", flat=True))
        for manifest_url in request.manifest_urls:
            if manifest_url not in known:  # a repeated request adds nothing
                kick_off(
                    user,
                    ImportRequest(headers=headers, manifest_url=manifest_url),
                    authority=authority,
                    base_url=base_url,
                    request_url=manifest_url,
                    submission=submission,
                )
        if submission.status != STOPPED:  # stopped is final; completed may still be stopped
            submission.status = request.status
            submission.save(update_fields=["status"])
        if submission.status == STOPPED:
            for job_instance_id in submission.imports.values_list("job_instance_id", flat=True):
                try:
                    control.cancel_job(job_instance_id)
                except (JobStateConflict, JobNotFound):
                    pass
    return submission


def _refuse_while_another_runs(submission: BulkSubmission) -> None:
    """A submitter's other submissions, locked in a fixed order so that two new ones cannot both pass."""
    others = list(
        BulkSubmission.objects.select_for_update()
        .filter(submitter=submission.submitter)
        .exclude(id=submission.id)
        .order_by("id")
    )
    running = [
        other
        for other in others
        if other.status == IN_PROGRESS
        or other.imports.filter(job_instance_id__in=control.unfinished_job_ids()).exists()
    ]
    if running:
        raise SubmitterBusy(
            f"Submission {running[0].submission_id} of {submission.submitter} is still running; retry once it has ended"
        )


@dataclass(frozen=True)
class SubmissionStatus:
    state: State  # RUNNING or COMPLETED: the other states are errors
    progress: str
    manifest: dict[str, Any] | None = None


def owned_submission(user: AbstractBaseUser, **key: Any) -> BulkSubmission:
    """The caller's submission by (submitter, submission_id) or id; ImportNotFound for another's or none."""
    submission = BulkSubmission.objects.filter(owner_id=user.pk, **key).first()
    if submission is None:
        raise ImportNotFound("No such submission of yours")
    return submission


def submission_status(submission: BulkSubmission) -> SubmissionStatus:
    """Running until the provider ended it and every import ended; then a status manifest (the ballot's
    BulkSubmitStatusManifest: `outcome` for `error` with BULK_EXPORT_KICKOFF=post-only, as export manifests)."""
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
                    "countSeverity": [{"code": "error", "count": status.report["errors"]}],
                }
            )
    if submission.status == IN_PROGRESS or running:
        return SubmissionStatus(
            State.RUNNING,
            f"{len(imports) - running} of {len(imports)} manifests imported"
            + ("" if submission.status != IN_PROGRESS else "; the submission is open"),
        )
    stu4 = settings.BULK_EXPORT_KICKOFF == "post-only"
    return SubmissionStatus(
        State.COMPLETED,
        "Completed",
        {
            **({"manifestType": MANIFEST_TYPE} if stu4 else {}),
            "submissionId": submission.submission_id,
            "transactionTime": format_instant(submission.created),
            "requiresAccessToken": True,
            **({"outputFormat": "application/fhir+ndjson"} if stu4 else {}),
            "submitter": submission.submitter,
            "status": submission.status,
            "output": outputs,
            ("outcome" if stu4 else "error"): errors,
        },
    )
