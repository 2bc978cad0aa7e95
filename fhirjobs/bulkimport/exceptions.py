"""The bulk import's errors: part of the FHIR store's exception tree, so they answer as OperationOutcomes."""

from __future__ import annotations

from fhirjobs.common.sources import SourceUnavailable
from fhirstore.exceptions import FhirStoreError, InvalidRequest, ResourceNotFound

__all__ = [
    "ImportFailed",
    "ImportNotFound",
    "InvalidImportRequest",
    "InvalidSubmission",
    "SourceUnavailable",
    "SubmitterBusy",
]


class InvalidImportRequest(InvalidRequest):
    """The import request is not valid (a source outside the allow-list among others)."""


class ImportNotFound(ResourceNotFound):
    """No such import: it never existed, was cancelled, or is another user's."""


class ImportFailed(FhirStoreError):
    """The import failed (a source could not be read, among others)."""

    status = 500
    issue_code = "exception"


class InvalidSubmission(ImportFailed):
    """A `$bulk-submit` the submission's state refuses (more manifests for a completed one, among others)."""

    status = 400
    issue_code = "invalid"


class SubmitterBusy(FhirStoreError):
    """Another submission of this submitter is running; retry once it has ended (Bulk Data STU4 ballot: 429)."""

    status = 429
    issue_code = "throttled"
