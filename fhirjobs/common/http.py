"""The asynchronous request pattern the FHIR jobs' operations share (FHIR's async pattern, Bulk Data's kick-off):
the kick-off asks for `Prefer: respond-async` and gets 202 with a status URL; the status URL names the job
by `_jobId` and answers 202 with `X-Progress` while it runs; DELETE on it cancels.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse

from fhirstore.exceptions import InvalidRequest
from fhirstore.http import fhir_response
from jobsite.auth import is_operator


def preferences(request: HttpRequest) -> set[str]:
    """The tokens of the `Prefer` header, lower-cased (`respond-async`, `handling=lenient`, …)."""
    return {token.strip().lower() for part in request.headers.get("Prefer", "").split(",") for token in part.split(";")}


def require_async(request: HttpRequest, operation: str) -> set[str]:
    """The request's preferences, after checking it asks for the asynchronous pattern the operation needs."""
    preferred = preferences(request)
    if "respond-async" not in preferred:
        raise InvalidRequest(f"{operation} runs asynchronously: send the header Prefer: respond-async")
    return preferred


def informational(
    message: str,
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
    warnings: tuple[str, ...] | list[str] = (),
) -> HttpResponse:
    """An OperationOutcome that reports what happened (kick-offs, cancels), with any warnings after it."""
    issues = [{"severity": "information", "code": "informational", "diagnostics": message}]
    issues += [{"severity": "warning", "code": "not-supported", "diagnostics": warning} for warning in warnings]
    return fhir_response({"resourceType": "OperationOutcome", "issue": issues}, status=status, headers=headers)


def still_running(progress: str, retry_after_seconds: int) -> HttpResponse:
    """The status answer of an asynchronous operation that has not ended: 202, how far, when to ask again."""
    return fhir_response(
        None, status=202, headers={"X-Progress": progress[:100], "Retry-After": str(retry_after_seconds)}
    )


def status_job_id(request: HttpRequest) -> str:
    """The `_jobId` of an asynchronous operation's status URL."""
    job_id = request.GET.get("_jobId")
    if not job_id:
        raise InvalidRequest("The status URL needs _jobId (use the Content-Location of the kick-off)")
    return job_id


def jobs_owner(request: HttpRequest) -> str | None:
    """Whose jobs this caller may see and act on through a status URL: None for an operator (everyone's),
    otherwise the caller's own."""
    return None if is_operator(request) else request.user.get_username()
