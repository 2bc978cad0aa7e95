"""The delete-expunge's errors: part of the FHIR store's exception tree, so they answer as OperationOutcomes."""

from __future__ import annotations

from fhirstore.exceptions import FhirStoreError, InvalidRequest, ResourceNotFound


class InvalidDeleteExpungeRequest(InvalidRequest):
    """The $delete-expunge request is not valid."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


class DeleteExpungeNotFound(ResourceNotFound):
    """No such delete-expunge: it never existed, was cancelled, or is another user's."""


class DeleteExpungeFailed(FhirStoreError):
    """The delete-expunge failed."""

    status = 500
    issue_code = "exception"


class DeleteExpungeRefused(DeleteExpungeFailed):
    """The delete-expunge stopped: resources outside it came to refer to the resources it deletes."""

    status = 409
    issue_code = "conflict"
