"""Patient `$merge` and `$hapi.fhir.replace-references` as plain functions: who may, and the operations
themselves (preview, now, or as a MERGE / REPLACE_REFERENCES job).

The view is thin over these. Up to MERGE_SYNC_MAX_RESOURCES referrers a merge runs in the request, in one
transaction (HAPI's limit: 512); above it the client must ask with `Prefer: respond-async` and a MERGE job
does it, followed by a Task; asked asynchronously, a merge is always a job.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction

from batch import control
from batch.control import InvalidParameters
from fhirjobs.merge.definition import MERGE_JOB, REPLACE_REFERENCES_JOB
from fhirjobs.merge.exceptions import InvalidMergeRequest, MergeNotPossible, TooManyReferrers
from fhirjobs.merge.parameters import MergeRequest, ReplaceReferencesRequest, information, merge_answer
from fhirjobs.merge.patients import (
    REPLACE_REFERENCES,
    check_mergeable,
    complete_merge,
    merged_target,
    record_provenance,
    resolve_patient,
    task_body,
)
from fhirjobs.merge.steps import merge_authority, referrer_pages
from fhirstore.exceptions import ResourceGone, ResourceNotFound
from fhirstore.referrers import replace_references
from fhirstore.storage import Write, read_resource, save_resources

MERGE_PERMISSION = "merge.merge_patients"


@dataclass(frozen=True)
class MergeAnswer:
    status: int  # 200 (merged or previewed) or 202 (a job follows, its Task in the body)
    body: dict  # the Parameters HAPI answers


def may_merge(user) -> bool:
    """Staff, or a user granted `merge.merge_patients`: a merge rewrites every record of the source patient."""
    return bool(user and user.is_authenticated and (user.is_staff or user.has_perm(MERGE_PERMISSION)))


def merge_patients(request: MergeRequest, *, started_by: str, asynchronous: bool) -> MergeAnswer:
    """Preview, merge now, or start a MERGE job; MergeNotPossible (422) for patients that cannot be merged,
    TooManyReferrers (412) when a synchronous merge would rewrite more than the limit."""
    source = resolve_patient(request.source_id, request.source_identifiers, "source")
    target = resolve_patient(request.target_id, request.target_identifiers, "target")
    check_mergeable(source, target)
    if request.result_patient is not None and request.result_patient.get("id") != target.logical_id:
        raise InvalidMergeRequest([f"result-patient must have the target's id ({target.logical_id!r})"])
    batch_size = request.batch_size or settings.MERGE_SYNC_MAX_RESOURCES
    pages = list(referrer_pages(f"Patient/{source.logical_id}", f"Patient/{target.logical_id}", batch_size))
    referrers = sum(len(ids) for _, ids in pages)
    if request.preview:
        return MergeAnswer(
            200,
            merge_answer(
                request,
                information(
                    "Preview only merge operation - no issues detected", f"Merge would update {referrers + 2} resources"
                ),
                result=merged_target(source, target, request.result_patient, request.delete_source),
            ),
        )
    if asynchronous:
        return _start_merge_job(request, source.logical_id, target.logical_id, started_by)
    if referrers > settings.MERGE_SYNC_MAX_RESOURCES:
        raise TooManyReferrers(
            f"{referrers} resources refer to the source patient, more than a synchronous merge "
            f"updates ({settings.MERGE_SYNC_MAX_RESOURCES}): send the header Prefer: respond-async"
        )
    authority = merge_authority(started_by)
    with transaction.atomic():
        rewritten = [
            version.versioned_reference
            for resource_type, ids in pages
            for version in replace_references(
                resource_type, ids, f"Patient/{source.logical_id}", f"Patient/{target.logical_id}", authority=authority
            )
        ]
        merged = complete_merge(
            source.logical_id,
            target.logical_id,
            result_patient=request.result_patient,
            delete_source=request.delete_source,
            rewritten=rewritten,
            started_by=started_by,
            authority=authority,
        )
    return MergeAnswer(
        200,
        merge_answer(
            request,
            information(
                f"Merge operation completed successfully: {len(rewritten)} resources referring to the source updated"
            ),
            result=merged.target.body,
        ),
    )


def _start_merge_job(request: MergeRequest, source_id: str, target_id: str, started_by: str) -> MergeAnswer:
    job_id, task_id = uuid.uuid4(), str(uuid.uuid4())
    parameters = {
        "source_patient": source_id,
        "target_patient": target_id,
        "task_id": task_id,
        "started_by": started_by,
        "result_patient": request.result_patient or {},
        "delete_source": request.delete_source,
    }
    if request.batch_size is not None:
        parameters["batch_size"] = request.batch_size
    task = task_body(task_id, str(job_id), f"Patient/{source_id}", f"Patient/{target_id}")
    _start_with_task(MERGE_JOB, parameters, job_id, task, started_by)
    return MergeAnswer(
        202,
        merge_answer(
            request,
            information(
                "Merge request is accepted, and will be processed asynchronously. See the task resource returned"
                " in this response for details."
            ),
            task=task,
        ),
    )


def replace_references_to(request: ReplaceReferencesRequest, *, started_by: str, asynchronous: bool) -> MergeAnswer:
    """`$hapi.fhir.replace-references`: every reference to `source` pointed at `target` (a Provenance of the
    new versions), now or as a REPLACE_REFERENCES job; MergeNotPossible (422) for an unknown target,
    TooManyReferrers (412) above `resource_limit` when synchronous."""
    try:
        read_resource(*request.target.split("/"))
    except (ResourceNotFound, ResourceGone):
        raise MergeNotPossible(f"target {request.target} does not exist or is deleted") from None
    pages = list(referrer_pages(request.source, request.target, settings.MERGE_SYNC_MAX_RESOURCES))
    referrers = sum(len(ids) for _, ids in pages)
    if asynchronous:
        job_id, task_id = uuid.uuid4(), str(uuid.uuid4())
        task = task_body(task_id, str(job_id), request.source, request.target, operation=REPLACE_REFERENCES)
        _start_with_task(
            REPLACE_REFERENCES_JOB,
            {"source": request.source, "target": request.target, "task_id": task_id, "started_by": started_by},
            job_id,
            task,
            started_by,
        )
        return MergeAnswer(
            202,
            {
                "resourceType": "Parameters",
                "parameter": [
                    {
                        "name": "outcome",
                        "resource": information(
                            "Replace references request is accepted, and will be "
                            "processed asynchronously (see the task)"
                        ),
                    },
                    {"name": "task", "resource": task},
                ],
            },
        )
    if referrers > request.resource_limit:
        raise TooManyReferrers(
            f"{referrers} resources refer to {request.source}, more than resource-limit "
            f"({request.resource_limit}): send the header Prefer: respond-async"
        )
    authority = merge_authority(started_by)
    with transaction.atomic():
        rewritten = [
            version.versioned_reference
            for resource_type, ids in pages
            for version in replace_references(resource_type, ids, request.source, request.target, authority=authority)
        ]
        if rewritten:
            record_provenance(rewritten, activity="update", started_by=started_by, authority=authority)
    return MergeAnswer(
        200,
        {
            "resourceType": "Parameters",
            "parameter": [
                {
                    "name": "outcome",
                    "resource": information(
                        f"{len(rewritten)} resources referring to {request.source} now refer to {request.target}"
                    ),
                }
            ],
        },
    )


def _start_with_task(definition_id: str, parameters: dict, job_id: uuid.UUID, task: dict, started_by: str) -> None:
    """The Task and the job, in one transaction: the job starts only with its Task written."""
    with transaction.atomic():
        save_resources([Write(task)], authority=merge_authority(started_by))
        try:
            control.start_job(definition_id, parameters, started_by=started_by, instance_id=job_id)
        except InvalidParameters as error:
            raise InvalidMergeRequest(list(error.problems)) from None
