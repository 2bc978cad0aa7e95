"""The EXPUNGE batch job definition (type level, previous versions), registered in `apps.py`."""

from __future__ import annotations

from batch.api import JobDefinition, JobDefinitionBuilder
from fhirjobs.common.ranges import generate_ranges, load_ids, url_problems
from fhirjobs.expunge.steps import expunge, report

EXPUNGE_JOB = "EXPUNGE"  # the definition id: stored in every job row, never changes

EXPUNGE: JobDefinition = (
    JobDefinitionBuilder(EXPUNGE_JOB, 1, "Expunge: delete the previous versions of the resources of a type")
    .parameter("urls", list, required=True, items=str, description="Type?: whose previous versions to delete")
    .parameter(
        "batch_size",
        int,
        default=1000,
        minimum=1,
        maximum=10_000,
        description="resources per chunk of the expunge step (and per transaction)",
    )
    .validate_with(url_problems)
    .gated()  # the report reads every page's record
    .first_step("generate-ranges", generate_ranges, "splits the type's resources into id ranges, one chunk each")
    .intermediate_step("load-ids", load_ids, "the ids of one range, one chunk per batch_size ids")
    .intermediate_step("expunge", expunge, "deletes the previous versions of one page in one transaction")
    .reduction_step("report", report, "the versions removed")
    .build()
)
