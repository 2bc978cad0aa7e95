"""The expunge's errors: part of the FHIR store's exception tree, so they answer as OperationOutcomes."""

from __future__ import annotations

from fhirstore.exceptions import FhirStoreError, InvalidRequest, ResourceNotFound


class InvalidExpungeRequest(InvalidRequest):
    """The $expunge request is not valid."""


class ExpungeNotFound(ResourceNotFound):
    """No such expunge: it never existed, was cancelled, or is another user's."""


class ExpungeFailed(FhirStoreError):
    """The expunge failed."""


class ExpungeBusy(FhirStoreError):
    """An export reads these resources as at its transactionTime: expunging waits until it ends; retry later."""

    status = 409
    issue_code = "conflict"
