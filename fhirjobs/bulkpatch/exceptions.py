"""The bulk patch's errors: part of the FHIR store's exception tree, so they answer as OperationOutcomes."""

from __future__ import annotations

from fhirstore.exceptions import FhirStoreError, InvalidRequest, ResourceNotFound


class InvalidBulkPatchRequest(InvalidRequest):
    """The $hapi.fhir.bulk-patch request is not valid."""


class BulkPatchNotFound(ResourceNotFound):
    """No such bulk patch: it never existed, was cancelled, or is another user's."""


class BulkPatchFailed(FhirStoreError):
    """The bulk patch failed."""
