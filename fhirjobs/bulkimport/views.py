"""`$import` (HAPI) and `$bulk-submit` (Bulk Data 4.0) over HTTP: thin views over `parameters` and `services`.

`POST [base]/$import` (Prefer: respond-async) → 202 + Content-Location `[base]/$import-poll-status?_jobId=…`;
`GET` it → 202 (X-Progress, Retry-After) or 200 + OperationOutcome of counts, a 4xx/5xx OperationOutcome on
failure; `DELETE` it → 202 (cancelled). `GET [base]/$import-errors/[id]` → the rejected lines as NDJSON.
`POST [base]/$bulk-submit`, `POST [base]/$bulk-submit-status`. Every endpoint needs a token with the `import`
scope, of a user allowed to import (staff, or the `bulkimport.start_import` permission).
"""

from __future__ import annotations

import json

from django.http import HttpResponse, StreamingHttpResponse

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
from fhirjobs.bulkimport.submission import submission_status, submit
from fhirjobs.common.http import informational, require_async, status_job_id, still_running
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
        return informational(
            "The import has started; poll its status URL",
            status=202,
            headers={"Content-Location": f"{base_url(request)}/$import-poll-status?_jobId={started.id}"},
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
    def post(self, request):
        submission = submit(
            request.user,
            parse_submit_request(read_json_body(request)),
            authority=write_authority(request),
            base_url=base_url(request),
        )
        return informational(f"Submission {submission.submission_id} is {submission.status}")


class BulkSubmitStatusView(BulkImportView):
    def post(self, request):
        submitter, submission_id = parse_submission_key(read_json_body(request))
        status = submission_status(request.user, submitter, submission_id)
        if status.state is State.RUNNING:
            return still_running(status.progress, RETRY_AFTER_SECONDS)
        return HttpResponse(json.dumps(status.manifest), content_type="application/json")
