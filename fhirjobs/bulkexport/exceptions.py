"""The bulk export's errors: part of the FHIR store's exception tree, so they answer as OperationOutcomes."""

from __future__ import annotations

from fhirstore.exceptions import FhirStoreError, InvalidRequest, ResourceNotFound


class InvalidExportRequest(InvalidRequest):
    """The export request is not valid."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


class GetKickOffRefused(FhirStoreError):
    """This server takes export kick-offs by POST only (Bulk Data STU4 ballot): POST a Parameters resource."""

    status = 405
    issue_code = "not-supported"


class ExportNotFound(ResourceNotFound):
    """No such export: it never existed, was deleted, or has expired."""


class ExportFileNotFound(ResourceNotFound):
    """No such export file: it never existed, was deleted, or has expired."""


class TooManyExports(FhirStoreError):
    """Too many exports of yours are running; retry once one has finished."""

    status = 429
    issue_code = "throttled"


class ExportFailed(FhirStoreError):
    """The export failed."""

    status = 500
    issue_code = "exception"
