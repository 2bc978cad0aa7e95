"""The merge's errors: part of the FHIR store's exception tree, so they answer as OperationOutcomes."""

from __future__ import annotations

from fhirstore.exceptions import InvalidRequest, InvalidResource, PreconditionFailed


class InvalidMergeRequest(InvalidRequest):
    """The $merge Parameters are malformed (400): missing, repeated or contradictory parameters."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


class MergeNotPossible(InvalidResource):
    """The request is well formed but these patients cannot be merged (422, as HAPI): one is unknown, an
    identifier matches none or several, the source was merged already."""


class TooManyReferrers(PreconditionFailed):
    """More resources refer to the source than a synchronous merge rewrites (412): ask with respond-async."""
