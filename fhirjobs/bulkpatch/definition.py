"""The BULK_PATCH batch job definition, registered in `apps.py`: a FHIRPath Patch applied to every match."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from batch.api import JobDefinition, JobDefinitionBuilder
from fhirjobs.bulkpatch.steps import patch, report
from fhirjobs.common.ranges import changed_url_problems, generate_ranges, load_ids
from fhirstore.exceptions import InvalidRequest
from fhirstore.fhirpatch import parse_patch

BULK_PATCH_JOB = "BULK_PATCH"  # the definition id: stored in every job row, never changes


def _problems(parameters: Mapping[str, Any]) -> Iterable[str]:
    yield from changed_url_problems(parameters, what="patch", done="bulk-patched")
    try:
        parse_patch(parameters["patch"])
    except InvalidRequest as error:
        yield f"patch: {error.message}"


BULK_PATCH: JobDefinition = (
    JobDefinitionBuilder(BULK_PATCH_JOB, 1, "Bulk patch: a FHIRPath Patch applied to every resource searches match")
    .parameter("urls", list, default=[], items=str, description="Type? or Type?search: what to patch (1..*)")
    .parameter("patch", dict, required=True, description="the FHIRPath Patch (a Parameters resource)")
    .parameter("dry_run", bool, default=False, description="report what would change, write nothing")
    .parameter(
        "batch_size",
        int,
        default=1000,
        minimum=1,
        maximum=10_000,
        description="resources per chunk of the patch step (and per transaction)",
    )
    .validate_with(_problems)
    .gated()  # every page listed before any is patched: patching cannot shift the walk
    .first_step("generate-ranges", generate_ranges, "splits each url's resources into id ranges, one chunk each")
    .intermediate_step("load-ids", load_ids, "the matching ids of one range, one chunk per batch_size ids")
    .intermediate_step("patch", patch, "patches one page in one transaction (resource by resource if it fails)")
    .reduction_step("report", report, "the counts per type, failures by id, a dry run's first diffs")
    .build()
)
