"""The reindex's errors: part of the FHIR store's exception tree, so they answer as OperationOutcomes."""

from __future__ import annotations

from fhirstore.exceptions import InvalidRequest


class InvalidReindexRequest(InvalidRequest):
    """The $reindex request is not valid."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems
