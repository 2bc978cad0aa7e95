"""`$reindex` and `$reindex-dryrun` over HTTP: thin views over `services`.

`POST [base]/$reindex` and `POST [base]/[Type]/$reindex` (a Parameters body: url*, batchSize?,
searchParameter*) start a REINDEX job and answer 200 with a Parameters naming the job and the URL of its
status on the control API. `GET [base]/[Type]/[id]/$reindex-dryrun` answers the index rows a reindex would
write for that resource. Both are for operators (see `ReindexAccess`).
"""

from __future__ import annotations

from django.urls import reverse

from fhirjobs.common.http import job_named
from fhirjobs.reindex.parameters import dry_run_parameters, parse_reindex_parameters
from fhirjobs.reindex.services import REINDEX_PERMISSION, dry_run, start_reindex
from fhirstore.http import FhirAccess, FhirView, fhir_response, read_json_body
from jobsite.auth import TokenHasScope, is_operator
from jobsite.models import Scope


class ReindexAccess(FhirAccess):
    """Operators (a staff session, or a token with the `control` scope), or users granted the Django permission
    `fhirstore.reindex`: a reindex loads the whole store."""

    message = (
        "Reindexing is for operators (a staff session or a token with the 'control' scope) or users with "
        "the permission fhirstore.reindex"
    )

    def has_permission(self, request, view) -> bool:
        permitted = is_operator(request) or request.user.has_perm(REINDEX_PERMISSION)
        return permitted and super().has_permission(request, view)


class ReindexView(FhirView):
    permission_classes = [ReindexAccess, TokenHasScope]
    required_scope = Scope.FHIR_WRITE  # it rewrites the index, as writes do

    def post(self, request, resource_type: str | None = None):
        body = read_json_body(request) if request.META.get("CONTENT_LENGTH") not in (None, "", "0") else None
        job = start_reindex(parse_reindex_parameters(body, resource_type), started_by=request.user.get_username())
        return job_named(job.id, request.build_absolute_uri(reverse("batch-job", args=[job.id])))


class ReindexDryRunView(FhirView):
    permission_classes = [ReindexAccess, TokenHasScope]  # a read (`fhir:read`), for operators

    def get(self, request, resource_type: str, logical_id: str):
        return fhir_response(dry_run_parameters(dry_run(resource_type, logical_id)))
