"""Bulk Data `$bulk-submit` (STU4 ballot) as plain functions: a provider submits `$export` manifests, each becomes
a BULK_IMPORT (`services.kick_off`), and the submission's status gathers theirs into a status manifest.

A submission is `in-progress` until its provider says `completed` (no more manifests) or `stopped` (its imports
are cancelled and a BULK_SUBMIT_UNDO job takes back what they loaded: `undo`). It is never reopened. A manifest
submitted with `replacesManifestUrl` replaces an earlier one of the submission: the earlier import is cancelled
if it still runs, the new one loads, and once it completed an undo job takes back what only the earlier one
brought. One submitter runs one submission at a time: another submissionId of the same submitter while one is
open or importing is a 429.
"""

from __future__ import annotations

import uuid
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
from fhirjobs.bulkimport.models import BulkImport, BulkSubmission
from fhirjobs.bulkimport.oauth import client_credentials_token
from fhirjobs.bulkimport.parameters import ImportRequest, SubmitRequest
from fhirjobs.bulkimport.services import kick_off, status_of
from fhirjobs.bulkimport.undo import start_undo
from fhirjobs.common.status import State, job_status
from fhirstore.authority import WriteAuthority
from fhirstore.fhirdates import format_instant

IN_PROGRESS, COMPLETED, STOPPED = "in-progress", "completed", "stopped"
MANIFEST_TYPE = "http://hl7.org/fhir/uv/bulkdata/StructureDefinition/BulkSubmitStatusManifest"


def submit(
    user: AbstractBaseUser, request: SubmitRequest, *, authority: WriteAuthority, base_url: str
) -> BulkSubmission:
    """`$bulk-submit`: add manifests to a submission (each becomes a BULK_IMPORT job) or change its status.

    SubmitterBusy when another submission of the submitter is running; InvalidSubmission for manifests added
    to an ended submission or an ended one reopened. A stopped submission cancels the imports it started and
    starts the undo of what they loaded (once); a manifest that replaces another cancels the other's import."""
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
        replaced = _replaced_import(submission, request)
        known = set(submission.imports.values_list("manifest_url", flat=True))
        for manifest_url in request.manifest_urls:
            if manifest_url not in known:  # a repeated request adds nothing
                if replaced is not None:
                    _cancel(replaced.job_instance_id)  # what it loaded so far is undone once the new one completes
                kick_off(
                    user,
                    ImportRequest(
                        headers=headers, manifest_url=manifest_url, file_encryption_key=request.file_encryption_key
                    ),
                    authority=authority,
                    base_url=base_url,
                    request_url=manifest_url,
                    submission=submission,
                    replaces=replaced,
                )
        if submission.status != STOPPED:  # stopped is final; completed may still be stopped
            submission.status = request.status
            submission.save(update_fields=["status"])
        if submission.status == STOPPED:
            import_ids = [str(import_id) for import_id in submission.imports.values_list("id", flat=True)]
            for job_instance_id in submission.imports.values_list("job_instance_id", flat=True):
                _cancel(job_instance_id)
            if submission.undo_job_id is None and import_ids:
                submission.undo_job_id = start_undo(submission, import_ids, user=user.get_username())
                submission.save(update_fields=["undo_job_id"])
    return submission


def _replaced_import(submission: BulkSubmission, request: SubmitRequest) -> BulkImport | None:
    """The submission's import of the manifest `replacesManifestUrl` names; InvalidSubmission when there is none
    or it was replaced by another manifest already. None without the parameter."""
    if not request.replaces_manifest_url:
        return None
    replaced = submission.imports.filter(manifest_url=request.replaces_manifest_url).first()
    if replaced is None:
        raise InvalidSubmission(
            f"replacesManifestUrl {request.replaces_manifest_url!r} is not a manifest of submission "
            f"{submission.submission_id}"
        )
    successor = BulkImport.objects.filter(replaces=replaced).first()
    if successor is not None and successor.manifest_url not in request.manifest_urls:
        raise InvalidSubmission(
            f"{request.replaces_manifest_url!r} was replaced already, by {successor.manifest_url!r}: replace that one"
        )
    return replaced


def _cancel(job_instance_id) -> None:
    try:
        control.cancel_job(job_instance_id)
    except (JobStateConflict, JobNotFound):
        pass  # it has ended already


def _refuse_while_another_runs(submission: BulkSubmission) -> None:
    """A submitter's other submissions, locked in a fixed order so that two new ones cannot both pass."""
    others = list(
        BulkSubmission.objects.select_for_update()
        .filter(submitter=submission.submitter)
        .exclude(id=submission.id)
        .order_by("id")
    )
    running = [other for other in others if other.status == IN_PROGRESS or _still_working(other)]
    if running:
        raise SubmitterBusy(
            f"Submission {running[0].submission_id} of {submission.submitter} is still running; retry once it has ended"
        )


def _still_working(submission: BulkSubmission) -> bool:
    """An import of the submission has not ended. Its undo does not count: a stopped submission lets the next one
    in at once (what the next one writes meanwhile is a later write, which the undo keeps)."""
    return submission.imports.filter(job_instance_id__in=control.unfinished_job_ids()).exists()


@dataclass(frozen=True)
class SubmissionStatus:
    state: State  # RUNNING or COMPLETED: the other states are errors
    progress: str
    manifest: dict[str, Any] | None = None


def _undo_outcome(job_id: uuid.UUID, errors: list[dict[str, Any]], manifest_url: str | None = None) -> int:
    """1 while the undo job runs; once it ended, an entry of what it did (or why it failed) added to `errors`."""
    status = job_status(job_id)
    if status.state is State.RUNNING:
        return 1
    what = f"What {manifest_url} alone brought" if manifest_url else "What the stopped submission loaded"
    entry: dict[str, Any] = {"type": "OperationOutcome", **({"manifestUrl": manifest_url} if manifest_url else {})}
    if status.state is State.COMPLETED:
        report = status.job.report
        entry["diagnostics"] = (
            f"{what} was undone: {report['removed']} resources removed, {report['restored']} restored to their "
            f"earlier version, {report['kept']} kept because written since"
            + "".join(f"; {sample}" for sample in report["kept_samples"])
        )
        entry["countSeverity"] = [{"code": "information", "count": report["removed"] + report["restored"]}] + (
            [{"code": "warning", "count": report["kept"]}] if report["kept"] else []
        )
    else:
        message = status.job.error_message if status.job else "the job is not known any more"
        entry["diagnostics"] = f"{what} could not be undone: {message}"
    errors.append(entry)
    return 0


def owned_submission(user: AbstractBaseUser, **key: Any) -> BulkSubmission:
    """The caller's submission by (submitter, submission_id) or id; ImportNotFound for another's or none."""
    submission = BulkSubmission.objects.filter(owner_id=user.pk, **key).first()
    if submission is None:
        raise ImportNotFound("No such submission of yours")
    return submission


def submission_status(submission: BulkSubmission) -> SubmissionStatus:
    """Running until the provider ended it and every import ended, and every undo (of a stopped submission, of a
    replaced manifest); then a status manifest (the ballot's BulkSubmitStatusManifest: `outcome` for `error`
    with BULK_EXPORT_KICKOFF=post-only, as export manifests). A replaced manifest's import is not listed; what
    an undo did (resources removed, restored, kept because written since) is an entry of `error`/`outcome`."""
    imports = list(submission.imports.order_by("created"))
    replaced = {bulk_import.replaces_id for bulk_import in imports if bulk_import.replaces_id}
    outputs, errors, running = [], [], 0
    for bulk_import in imports:
        if bulk_import.undo_job_id is not None:
            running += _undo_outcome(bulk_import.undo_job_id, errors, bulk_import.replaces.manifest_url)
        if bulk_import.id in replaced:
            continue
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
    if submission.undo_job_id is not None:
        running += _undo_outcome(submission.undo_job_id, errors)
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
