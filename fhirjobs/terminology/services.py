"""The terminology jobs as plain functions: start an upload (from a request), start a pre-expansion.

The `$upload-external-code-system` view, the `upload_terminology` command and the scheduled job are thin
over these.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import transaction

from batch import control
from batch.control import InvalidParameters, JobSnapshot, JobStatus
from fhirjobs.terminology.exceptions import InvalidUploadRequest
from fhirjobs.terminology.parameters import UploadRequest
from fhirjobs.terminology.steps import TERMINOLOGY_DELETE_JOB, TERMINOLOGY_UPLOAD_JOB, VALUESET_EXPAND_JOB
from fhirstore.terminology import storage, valuesets
from fhirstore.terminology.lookup import resolve_version

VALUESET_EXPAND_STARTER = "system:valueset-expand"  # `started_by` of the scheduled pre-expansions
UNFINISHED = (JobStatus.QUEUED, JobStatus.IN_PROGRESS, JobStatus.FINALIZE)


def start_upload(request: UploadRequest, *, started_by: str) -> JobSnapshot:
    """A BUILDING version, the inline files kept for the workers, and a TERMINOLOGY_UPLOAD job filling it."""
    with transaction.atomic():
        version = storage.new_version(request.system, request.version or None)
        files = []
        for upload_file in request.files:
            if upload_file.data is not None:
                file_id = uuid.uuid4()
                storage.store_uploaded_file(file_id, upload_file.name, upload_file.data)
                files.append({"stored": str(file_id), "name": upload_file.name})
            else:
                files.append({"url": upload_file.url, "name": upload_file.name})
        try:
            job = control.start_job(
                TERMINOLOGY_UPLOAD_JOB,
                {
                    "system": request.system,
                    "version_id": version.id,
                    "version": request.version,
                    "files": files,
                    "make_current": request.make_current,
                    "chunk_concepts": settings.TERMINOLOGY_UPLOAD_CHUNK_CONCEPTS,
                },
                started_by=started_by,
                max_concurrent_chunks=settings.TERMINOLOGY_UPLOAD_MAX_CONCURRENT_CHUNKS or None,
            )
        except InvalidParameters as error:
            raise InvalidUploadRequest(list(error.problems)) from None
        storage.note_upload(version.id, str(job.id))
    return job


def expand_stale_value_sets_now(*, started_by: str = VALUESET_EXPAND_STARTER) -> JobSnapshot | None:
    """A VALUESET_EXPAND job, when some stored ValueSet's expansion is missing or stale and no such job is
    unfinished; None otherwise."""
    if not valuesets.stale_value_sets(1):
        return None
    if control.list_jobs(UNFINISHED, definition_ids=[VALUESET_EXPAND_JOB])[:1]:
        return None
    return control.start_job(VALUESET_EXPAND_JOB, {}, started_by=started_by)


def delete_version(system: str, version: str, *, started_by: str) -> JobSnapshot:
    """A TERMINOLOGY_DELETE job for one version, which stops answering now (DELETING); UnknownCodeSystem (404)
    when there is no such version."""
    found = resolve_version(system, version)
    with transaction.atomic():
        storage.start_deleting(found.id)
        return control.start_job(
            TERMINOLOGY_DELETE_JOB,
            {"version_id": found.id, "system": system, "version": version},
            started_by=started_by,
            max_concurrent_chunks=settings.TERMINOLOGY_UPLOAD_MAX_CONCURRENT_CHUNKS or None,
        )
