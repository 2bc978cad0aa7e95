"""`$delete-expunge` over HTTP: thin views over `parameters` and `services`.

`POST [base]/$delete-expunge` (a Parameters body: url 1..*, batchSize?, cascade?, cascadeMaxRounds?) starts a
DELETE_EXPUNGE job: with `Prefer: respond-async` 202 + Content-Location `[base]/$delete-expunge-status?_jobId=…`,
without it 200 + a Parameters naming the job (`jobId`) and that URL (HAPI's answer). 409 naming the referrers
when resources the urls do not match refer to ones they match (unless `cascade`). `GET` the status URL → 202
(X-Progress, Retry-After) or 200 + an OperationOutcome of the counts per type; `DELETE` it → 202 (cancelled).

`DELETE [base]/[Type]?[criteria]&_expunge=true` (HAPI's) starts the same job over `Type?criteria`: 200 (202 with
`Prefer: respond-async`) and an OperationOutcome naming the job, Content-Location its status URL. The store's own
interactions on `/fhir/[Type]` (search, create, conditional update) are unchanged: the view is theirs plus DELETE.

Who may: a staff user or one granted `deleteexpunge.delete_expunge`; with a token, it needs the scopes
`fhir:write` and `admin:delete`. Everyone else: 403.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode

from fhirjobs.common.http import (
    cancelled,
    informational,
    job_named,
    jobs_owner,
    kicked_off,
    preferences,
    status_job_id,
    status_url,
    still_running,
)
from fhirjobs.common.status import State
from fhirjobs.deleteexpunge.parameters import DeleteExpungeRequest, parse_delete_expunge_parameters, report_outcome
from fhirjobs.deleteexpunge.services import (
    cancel_delete_expunge,
    delete_expunge_status,
    may_delete_expunge,
    start_delete_expunge,
)
from fhirstore.exceptions import InvalidRequest
from fhirstore.http import FhirAccess, FhirView, fhir_response, read_json_body
from fhirstore.views import TypeView
from jobsite.auth import TokenHasScope, has_scope
from jobsite.models import Scope

RETRY_AFTER_SECONDS = 2


class DeleteExpungeAccess(FhirAccess):
    message = (
        "$delete-expunge needs a staff user or the permission deleteexpunge.delete_expunge, and a token "
        "with the scopes 'fhir:write' and 'admin:delete'"
    )

    def has_permission(self, request, view) -> bool:
        return (
            may_delete_expunge(request.user)
            and has_scope(request, Scope.ADMIN_DELETE)
            and super().has_permission(request, view)
        )


class DeleteExpungeEndpoint(FhirView):
    permission_classes = [DeleteExpungeAccess, TokenHasScope]
    required_scope = Scope.FHIR_WRITE  # kick-off, status and cancel alike


class DeleteExpungeView(DeleteExpungeEndpoint):
    def post(self, request):
        job = start_delete_expunge(
            parse_delete_expunge_parameters(read_json_body(request)), started_by=request.user.get_username()
        )
        url = status_url(request, "delete-expunge-status", job.id)
        if "respond-async" in preferences(request):
            return kicked_off("The delete-expunge has started; poll its status URL", url)
        return job_named(job.id, url)


class DeleteExpungeStatusView(DeleteExpungeEndpoint):
    def get(self, request):
        status = delete_expunge_status(status_job_id(request), started_by=jobs_owner(request))
        if status.state is State.RUNNING:
            return still_running(status.progress, RETRY_AFTER_SECONDS)
        return fhir_response(report_outcome(status.report))

    def delete(self, request):
        return cancelled(request, cancel_delete_expunge, "Delete-expunge", "the pages deleted stay deleted")


class TypeDeleteExpungeView(TypeView):
    """The store's type endpoint, plus `DELETE ?criteria&_expunge=true` (for callers allowed to delete-expunge)."""

    def get_permissions(self):
        if self.request.method == "DELETE":
            return [DeleteExpungeAccess(), TokenHasScope()]
        return super().get_permissions()

    def delete(self, request, resource_type: str):
        pairs = parse_qsl(request.META.get("QUERY_STRING", ""), keep_blank_values=True)
        if ("_expunge", "true") not in pairs:
            raise InvalidRequest(
                "DELETE of a type needs _expunge=true (a delete-expunge); conditional delete is not supported"
            )
        url = f"{resource_type}?{urlencode([(name, value) for name, value in pairs if name != '_expunge'])}"
        job = start_delete_expunge(DeleteExpungeRequest((url,)), started_by=request.user.get_username())
        asynchronous = "respond-async" in preferences(request)
        return informational(
            f"Delete-expunge job {job.id} submitted; poll its status URL",
            status=202 if asynchronous else 200,
            headers={"Content-Location": status_url(request, "delete-expunge-status", job.id)},
        )
