"""`$import` (HAPI) and `$bulk-submit` (Bulk Data 4.0) over HTTP: thin views over `parameters` and `services`.

`POST [base]/$import` (Prefer: respond-async) → 202 + Content-Location `[base]/$import-poll-status?_jobId=…`;
`GET` it → 202 (X-Progress, Retry-After) or 200 + OperationOutcome of counts, a 4xx/5xx OperationOutcome on
failure; `DELETE` it → 202 (cancelled). `GET [base]/$import-errors/[id]` → the rejected lines as NDJSON.
`POST [base]/$bulk-submit`, `POST [base]/$bulk-submit-status` (with `Prefer: respond-async`: 202 and
`[base]/$bulk-submit-poll-status?_jobId=…` to poll). Every endpoint needs a token with the `import` scope (the
Bulk Submit ones: `import` or `system/bulk-submit`), of a user allowed to import (staff, or the
`bulkimport.start_import` permission).
"""

from __future__ import annotations

import json
import uuid

from django.conf import settings
from django.http import HttpResponse, StreamingHttpResponse

from fhirjobs.bulkimport.exceptions import ImportNotFound, SubmitterBusy
from fhirjobs.bulkimport.parameters import (
    parse_import_request,
    parse_submission_key,
    parse_submit_request,
)
from fhirjobs.bulkimport.services import (
    can_import,
    cancel_import,
    error_lines,
    import_status,
    kick_off,
    report_outcome,
)
from fhirjobs.bulkimport.submission import owned_submission, submission_status, submit
from fhirjobs.common.http import (
    informational,
    kicked_off,
    preferences,
    require_async,
    status_job_id,
    status_url,
    still_running,
)
from fhirjobs.common.status import State
from fhirstore.http import FhirAccess, FhirView, base_url, fhir_response, read_json_body, write_authority
from jobsite.auth import TokenHasScope
from jobsite.models import Scope

NDJSON = "application/fhir+ndjson"
RETRY_AFTER_SECONDS = 2


class ImportAccess(FhirAccess):
    message = "Bulk import needs a staff user or the bulkimport.start_import permission"

    def has_permission(self, request, view) -> bool:
        return can_import(request.user) and super().has_permission(request, view)


class BulkImportView(FhirView):
    permission_classes = [ImportAccess, TokenHasScope]
    required_scope = Scope.IMPORT  # kick-off, status, cancel, error file and Bulk Submit alike


class ImportKickOffView(BulkImportView):
    def post(self, request):
        require_async(request, "$import")
        import_request = parse_import_request(read_json_body(request))
        started = kick_off(
            request.user,
            import_request,
            authority=write_authority(request),
            base_url=base_url(request),
            request_url=request.build_absolute_uri(),
        )
        return kicked_off(
            "The import has started; poll its status URL", status_url(request, "import-poll-status", started.id)
        )


class ImportStatusView(BulkImportView):
    def get(self, request):
        status = import_status(request.user, status_job_id(request))
        if status.state is State.RUNNING:
            return still_running(status.progress, RETRY_AFTER_SECONDS)
        return fhir_response(report_outcome(status.report))

    def delete(self, request):
        import_id = status_job_id(request)
        cancel_import(request.user, import_id)
        return informational(f"Import {import_id} is cancelled (what it loaded stays)", status=202)


class ImportErrorsView(BulkImportView):
    def get(self, request, import_id: str):
        return StreamingHttpResponse(error_lines(request.user, import_id), content_type=NDJSON)


class BulkSubmitView(BulkImportView):
    required_scope = (Scope.IMPORT, Scope.BULK_SUBMIT)  # `system/bulk-submit`: the STU4 ballot's scope

    def handle_exception(self, exc: Exception) -> HttpResponse:
        response = super().handle_exception(exc)
        if isinstance(exc, SubmitterBusy):
            response["Retry-After"] = str(settings.BULK_SUBMIT_RETRY_AFTER_SECONDS)
        return response

    def post(self, request):
        submission = submit(
            request.user,
            parse_submit_request(read_json_body(request)),
            authority=write_authority(request),
            base_url=base_url(request),
        )
        return informational(f"Submission {submission.submission_id} is {submission.status}")


class BulkSubmitStatusView(BulkSubmitView):
    """`$bulk-submit-status`: with `Prefer: respond-async` (the STU4 ballot) 202 and a status URL to poll;
    without it, the status itself at once (as Pathling answers)."""

    def post(self, request):
        submitter, submission_id = parse_submission_key(read_json_body(request))
        submission = owned_submission(request.user, submitter=submitter, submission_id=submission_id)
        if "respond-async" in preferences(request):
            return kicked_off(
                f"Poll the status of submission {submission_id}",
                status_url(request, "bulk-submit-poll-status", submission.id),
            )
        return _status_response(submission)


class BulkSubmitPollStatusView(BulkSubmitView):
    """The status URL `$bulk-submit-status` gives: 202 (X-Progress, Retry-After) until the submission has ended
    and every import with it, then 200 and the status manifest."""

    def get(self, request):
        try:
            key = uuid.UUID(status_job_id(request))
        except ValueError:
            raise ImportNotFound("No such submission of yours") from None
        return _status_response(owned_submission(request.user, id=key))


def _status_response(submission) -> HttpResponse:
    status = submission_status(submission)
    if status.state is State.RUNNING:
        return still_running(status.progress, RETRY_AFTER_SECONDS)
    return HttpResponse(json.dumps(status.manifest), content_type="application/json")
