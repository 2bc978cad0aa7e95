"""The asynchronous request pattern the FHIR jobs' operations share (FHIR's async pattern, Bulk Data's kick-off):
the kick-off asks for `Prefer: respond-async` and gets 202 with a status URL; the status URL names the job
by `_jobId` and answers 202 with `X-Progress` while it runs; DELETE on it cancels.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from fhirstore.exceptions import InvalidRequest
from fhirstore.http import base_url, fhir_response
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


def status_url(request: HttpRequest, operation: str, job_id: uuid.UUID | str) -> str:
    """The status URL of a job an operation started: `[base]/$<operation>?_jobId=…` ("delete-expunge-status")."""
    return f"{base_url(request)}/${operation}?_jobId={job_id}"


def kicked_off(message: str, status_url: str) -> HttpResponse:
    """The asynchronous kick-off's answer: 202, `message`, and the status URL to poll in Content-Location."""
    return informational(message, status=202, headers={"Content-Location": status_url})


def job_named(job_id: uuid.UUID | str, status_url: str) -> HttpResponse:
    """HAPI's synchronous answer to a kick-off: 200 and a Parameters naming the job (`jobId`) and its status URL
    (`status`, in Content-Location too); the job runs in the background all the same."""
    return fhir_response(
        {
            "resourceType": "Parameters",
            "parameter": [
                {"name": "jobId", "valueString": str(job_id)},
                {"name": "status", "valueUrl": status_url},
            ],
        },
        headers={"Content-Location": status_url},
    )


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


def cancelled(request: HttpRequest, cancel: Callable[..., None], noun: str, what_stays: str) -> HttpResponse:
    """DELETE on a status URL: `cancel(job_id, started_by=…)` the job it names, as `jobs_owner` allows, and
    202 saying what the work done so far leaves behind."""
    job_id = status_job_id(request)
    cancel(job_id, started_by=jobs_owner(request))
    return informational(f"{noun} {job_id} is cancelled ({what_stays})", status=202)
