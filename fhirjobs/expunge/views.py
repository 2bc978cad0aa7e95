"""`$expunge` over HTTP: thin views over `parameters` and `services`.

`POST [base]/[Type]/[id]/$expunge` expunges what its Parameters ask (`expungeDeletedResources`,
`expungePreviousVersions`, `limit`) of that resource now and answers HAPI's Parameters `count`.
`POST [base]/[Type]/$expunge` and `POST [base]/$expunge` (every type; `expungeEverything` too), with Prefer:
respond-async, start an EXPUNGE job → 202 + Content-Location `[base]/$expunge-status?_jobId=…`; `GET` it → 202
while it runs, then 200 + Parameters `count`; `DELETE` it cancels. Who may: staff or the permission
`expunge.expunge`; tokens need `fhir:write` and `admin:delete`.
"""

from __future__ import annotations

from fhirjobs.common.http import (
    cancelled,
    jobs_owner,
    kicked_off,
    require_async,
    status_job_id,
    status_url,
    still_running,
)
from fhirjobs.common.status import State
from fhirjobs.expunge.parameters import count_parameters, expunge_request
from fhirjobs.expunge.services import cancel_expunge, expunge_instance, expunge_status, may_expunge, start_expunge
from fhirstore.http import FhirAccess, FhirView, fhir_response, read_json_body
from jobsite.auth import TokenHasScope, has_scope
from jobsite.models import Scope

RETRY_AFTER_SECONDS = 2


class ExpungeAccess(FhirAccess):
    message = (
        "$expunge needs a staff user or the permission expunge.expunge, and a token with the scopes "
        "'fhir:write' and 'admin:delete'"
    )

    def has_permission(self, request, view) -> bool:
        return (
            may_expunge(request.user)
            and has_scope(request, Scope.ADMIN_DELETE)
            and super().has_permission(request, view)
        )


class ExpungeEndpoint(FhirView):
    permission_classes = [ExpungeAccess, TokenHasScope]
    required_scope = Scope.FHIR_WRITE


class InstanceExpungeView(ExpungeEndpoint):
    def post(self, request, resource_type: str, logical_id: str):
        expunge = expunge_request(read_json_body(request))
        return fhir_response(count_parameters(expunge_instance(resource_type, logical_id, expunge)))


class ExpungeJobView(ExpungeEndpoint):
    def post(self, request, resource_type: str | None = None):
        expunge = expunge_request(read_json_body(request), system=resource_type is None)
        require_async(request, f"$expunge of {'a type' if resource_type else 'the system'}")
        job = start_expunge(resource_type, expunge, started_by=request.user.get_username())
        return kicked_off("The expunge has started; poll its status URL", status_url(request, "expunge-status", job.id))


class ExpungeStatusView(ExpungeEndpoint):
    def get(self, request):
        state, progress, count = expunge_status(status_job_id(request), started_by=jobs_owner(request))
        if state is State.RUNNING:
            return still_running(progress, RETRY_AFTER_SECONDS)
        return fhir_response(count_parameters(count))

    def delete(self, request):
        return cancelled(request, cancel_expunge, "Expunge", "the pages done stay done")
