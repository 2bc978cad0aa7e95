"""`POST [base]/Patient/$merge` over HTTP: a thin view over `parameters` and `services`.

A Parameters body (source-patient | source-patient-identifier, target-patient | target-patient-identifier,
result-patient?, preview?, delete-source?, batch-size?). `preview=true`: 200 and what the merge would do,
nothing written. Without `Prefer: respond-async`: 200 and the merged target, or 412 above the synchronous
limit. With it: 202 and the Task that follows the MERGE job (`GET /fhir/Task/[id]`). Malformed parameters:
400; patients that cannot be merged (unknown, ambiguous identifiers, merged already): 422.

`$hapi.fhir.replace-references` (below) shares the job's steps and who may.

Who may: a staff user or one granted `merge.merge_patients`; with a token, it needs the scope `fhir:write`.
Everyone else: 403.
"""

from __future__ import annotations

from fhirjobs.common.http import preferences
from fhirjobs.merge.parameters import parse_merge_parameters, parse_replace_references_parameters
from fhirjobs.merge.services import may_merge, merge_patients, replace_references_to
from fhirstore.http import FhirAccess, FhirView, fhir_response, read_json_body
from jobsite.auth import TokenHasScope
from jobsite.models import Scope


class MergeAccess(FhirAccess):
    message = "Patient/$merge needs a staff user or the permission merge.merge_patients, and a token with 'fhir:write'"

    def has_permission(self, request, view) -> bool:
        return may_merge(request.user) and super().has_permission(request, view)


class MergeEndpoint(FhirView):
    permission_classes = [MergeAccess, TokenHasScope]
    required_scope = Scope.FHIR_WRITE


class MergeView(MergeEndpoint):
    def post(self, request):
        answer = merge_patients(
            parse_merge_parameters(read_json_body(request)),
            started_by=request.user.get_username(),
            asynchronous="respond-async" in preferences(request),
        )
        return fhir_response(answer.body, status=answer.status)


class ReplaceReferencesView(MergeEndpoint):
    """`POST [base]/$hapi.fhir.replace-references` (source-reference-id, target-reference-id, resource-limit?):
    200 and an `outcome`, 412 above resource-limit; with `Prefer: respond-async` 202 and the `task`."""

    def post(self, request):
        answer = replace_references_to(
            parse_replace_references_parameters(read_json_body(request)),
            started_by=request.user.get_username(),
            asynchronous="respond-async" in preferences(request),
        )
        return fhir_response(answer.body, status=answer.status)
