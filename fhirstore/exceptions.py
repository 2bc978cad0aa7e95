"""The FHIR store's one exception tree.

Each error knows the HTTP status and the OperationOutcome `issue.code` it is reported with, so the REST
layer, the bundle processor and the loader all report a failure the same way. A subclass's docstring is
its default message.
"""

from __future__ import annotations


class FhirStoreError(Exception):
    """The FHIR store could not do what was asked."""

    status: int = 500
    issue_code: str = "exception"

    def __init__(self, message: str | None = None):
        super().__init__(message or (self.__doc__ or "").strip())

    @property
    def message(self) -> str:
        return str(self.args[0])


class InvalidRequest(FhirStoreError):
    """The request is malformed."""

    status = 400
    issue_code = "invalid"


class UnsupportedSearch(InvalidRequest):
    """This search parameter or modifier is not supported."""

    issue_code = "not-supported"


class NotAuthorized(FhirStoreError):
    """Authentication is required."""

    status = 401
    issue_code = "login"


class Forbidden(FhirStoreError):
    """You are not allowed to do this."""

    status = 403
    issue_code = "forbidden"


class ResourceNotFound(FhirStoreError):
    """No such resource."""

    status = 404
    issue_code = "not-found"


class UnknownResourceType(ResourceNotFound):
    """Unknown resource type."""


class ResourceGone(FhirStoreError):
    """The resource has been deleted."""

    status = 410
    issue_code = "deleted"


class SearchExpired(FhirStoreError):
    """The search has expired; run it again."""

    status = 410
    issue_code = "not-found"


class VersionConflict(FhirStoreError):
    """Another request changed this resource at the same time; retry."""

    status = 409
    issue_code = "conflict"


class PreconditionFailed(FhirStoreError):
    """A precondition of the request failed."""

    status = 412
    issue_code = "conflict"


class PayloadTooLarge(FhirStoreError):
    """The request body is too large."""

    status = 413
    issue_code = "too-costly"


class UnsupportedMediaType(FhirStoreError):
    """Send application/fhir+json or application/json."""

    status = 415
    issue_code = "not-supported"


class InvalidResource(FhirStoreError):
    """The resource is not valid."""

    status = 422
    issue_code = "processing"

    def __init__(self, message: str | None = None, problems: list[str] | None = None):
        super().__init__(message)
        self.problems = problems or [self.message]


class SnapshotUnsettled(FhirStoreError):
    """The store as of now is not settled yet (an expunge has just committed); retry in a moment."""

    status = 503
    issue_code = "transient"


class ResourceReferenced(FhirStoreError):
    """Other resources still refer to the resources to delete."""

    status = 409
    issue_code = "conflict"

    def __init__(self, message: str | None = None, referrers: list[str] | tuple[str, ...] = ()):
        super().__init__(message)
        self.referrers = list(referrers)
