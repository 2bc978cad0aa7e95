"""The reindex as plain functions: start one, start one for changed SearchParameters, a dry run, who may.
The request's parameters (and the dry run's answer) are read and written in `parameters`.

The views, the `reindex` command and the SearchParameter write path are thin over these.
"""

from __future__ import annotations

from collections.abc import Sequence

from django.conf import settings

from batch import control
from batch.control import InvalidParameters, JobSnapshot
from fhirjobs.reindex.definition import REINDEX_JOB
from fhirjobs.reindex.exceptions import InvalidReindexRequest
from fhirjobs.reindex.parameters import ReindexRequest
from fhirjobs.reindex.steps import unknown_codes
from fhirstore.exceptions import InvalidRequest
from fhirstore.models import CustomSearchParameter
from fhirstore.resource_types import is_resource_type
from fhirstore.search_params import IndexRows
from fhirstore.storage import index_rows_of, read_resource

PARAMETER_CHANGE_STARTER = "system:search-parameter-change"  # `started_by` of the automatic jobs
REINDEX_PERMISSION = "fhirstore.reindex"


def start_reindex(request: ReindexRequest, *, started_by: str) -> JobSnapshot:
    """Start a REINDEX job; InvalidReindexRequest when its parameters are not valid."""
    unknown = unknown_codes(request.urls, request.search_parameters)
    if unknown:
        raise InvalidReindexRequest([f"unknown search parameters: {', '.join(unknown)}"])
    try:
        return control.start_job(
            REINDEX_JOB,
            request.job_parameters(),
            started_by=started_by,
            max_concurrent_chunks=settings.REINDEX_MAX_CONCURRENT_CHUNKS or None,
        )
    except InvalidParameters as error:
        raise InvalidReindexRequest(list(error.problems)) from None


def reindex_changed_parameters(
    sender: object, *, search_parameter: int, resource_types: Sequence[str], codes: Sequence[str], **_: object
) -> None:
    """`search_parameters_changed`: one job over the parameter's base types, rebuilding only its rows. It
    starts when the SearchParameter's transaction commits; the parameter is searchable when it completes."""
    job = control.start_job(
        REINDEX_JOB,
        {"urls": [f"{t}?" for t in resource_types], "search_parameters": list(codes)},
        started_by=PARAMETER_CHANGE_STARTER,
        max_concurrent_chunks=settings.REINDEX_MAX_CONCURRENT_CHUNKS or None,
    )
    CustomSearchParameter.objects.filter(search_parameter_id=search_parameter).update(reindex_job_id=job.id)


def dry_run(resource_type: str, logical_id: str) -> IndexRows:
    """The index rows a reindex would write for this resource now (404/410 as a read)."""
    if not is_resource_type(resource_type):
        raise InvalidRequest(f"Unknown resource type {resource_type!r}")
    return index_rows_of(read_resource(resource_type, logical_id).body)
