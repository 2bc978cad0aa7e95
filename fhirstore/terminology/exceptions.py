"""The terminology's errors: part of the FHIR store's exception tree, so they answer as OperationOutcomes."""

from __future__ import annotations

from fhirstore.exceptions import FhirStoreError, InvalidRequest, ResourceNotFound


class InvalidTerminologyFile(InvalidRequest):
    """The file is not in the format of the code system's distribution."""


class UnknownCodeSystem(ResourceNotFound):
    """No version of this code system is loaded."""


class UnknownValueSet(ResourceNotFound):
    """No such ValueSet."""


class ExpansionTooCostly(FhirStoreError):
    """The expansion has more codes than this server expands on the fly."""

    status = 422
    issue_code = "too-costly"


class UnknownCode(InvalidRequest):
    """The code is not in the code system."""

    issue_code = "code-invalid"
