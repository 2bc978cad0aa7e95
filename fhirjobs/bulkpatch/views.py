"""`$hapi.fhir.bulk-patch` over HTTP: thin views over `parameters` and `services`.

`POST [base]/$hapi.fhir.bulk-patch` (a Parameters: patch, url 1..*, dryRun?, batchSize?) starts a BULK_PATCH
job: 202 + Content-Location `[base]/$hapi.fhir.bulk-patch-status?_jobId=…`; 400 for anything malformed (the
patch included), before anything runs. `GET` the status URL → 202 (X-Progress, Retry-After) or 200 + an
OperationOutcome of the counts, the failures by id and a dry run's diffs; `DELETE` it → 202 (cancelled).

Who may: a staff user or one granted `bulkpatch.bulk_patch`, with a token of scope `fhir:write`. Else 403.
"""

from __future__ import annotations

from fhirjobs.bulkpatch.parameters import parse_bulk_patch_parameters, report_outcome
from fhirjobs.bulkpatch.services import bulk_patch_status, cancel_bulk_patch, may_bulk_patch, start_bulk_patch
from fhirjobs.common.http import cancelled, jobs_owner, kicked_off, status_job_id, status_url, still_running
from fhirjobs.common.status import State
from fhirstore.http import FhirAccess, FhirView, fhir_response, read_json_body
from jobsite.auth import TokenHasScope
from jobsite.models import Scope

RETRY_AFTER_SECONDS = 2


class BulkPatchAccess(FhirAccess):
    message = "$hapi.fhir.bulk-patch needs a staff user or the permission bulkpatch.bulk_patch, and 'fhir:write'"

    def has_permission(self, request, view) -> bool:
        return may_bulk_patch(request.user) and super().has_permission(request, view)


class BulkPatchEndpoint(FhirView):
    permission_classes = [BulkPatchAccess, TokenHasScope]
    required_scope = Scope.FHIR_WRITE  # kick-off, status and cancel alike


class BulkPatchView(BulkPatchEndpoint):
    def post(self, request):
        job = start_bulk_patch(
            parse_bulk_patch_parameters(read_json_body(request)), started_by=request.user.get_username()
        )
        return kicked_off(
            "The bulk patch has started; poll its status URL",
            status_url(request, "hapi.fhir.bulk-patch-status", job.id),
        )


class BulkPatchStatusView(BulkPatchEndpoint):
    def get(self, request):
        state, progress, report = bulk_patch_status(status_job_id(request), started_by=jobs_owner(request))
        if state is State.RUNNING:
            return still_running(progress, RETRY_AFTER_SECONDS)
        return fhir_response(report_outcome(report))

    def delete(self, request):
        return cancelled(request, cancel_bulk_patch, "Bulk patch", "the pages patched stay patched")
