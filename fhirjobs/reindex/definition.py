"""The REINDEX batch job definition, registered in `apps.py`: parameters, checks and steps (HAPI's)."""

from __future__ import annotations

from batch.api import CompletedJob, JobDefinition, JobDefinitionBuilder
from fhirjobs.common.ranges import generate_ranges, load_ids, url_problems
from fhirjobs.reindex.steps import reindex
from fhirstore.custom_params import reindex_completed

REINDEX_JOB = "REINDEX"  # the definition id: stored in every job row, never changes


def _completed(job: CompletedJob) -> None:
    """Parameters waiting for this job may now be searched."""
    reindex_completed(job.instance_id)


REINDEX: JobDefinition = (
    JobDefinitionBuilder(REINDEX_JOB, 1, "Reindex: re-extract the search index rows of stored resources")
    .parameter(
        "urls",
        list,
        default=[],
        items=str,
        description="Type? or Type?search: what to reindex; none: every stored resource",
    )
    .parameter(
        "batch_size",
        int,
        default=1000,
        minimum=1,
        maximum=10_000,
        description="resources per chunk of the reindex step (and per transaction)",
    )
    .parameter(
        "search_parameters",
        list,
        default=[],
        items=str,
        description="codes of the parameters whose rows to rebuild; none: all of the resource's",
    )
    .validate_with(url_problems)  # codes are not checked: rebuilding a deleted parameter's rows removes them
    .on_completion(_completed)
    .first_step("generate-ranges", generate_ranges, "splits each url's resources into id ranges, one chunk each")
    .intermediate_step("load-ids", load_ids, "the matching ids of one range, one chunk per batch_size ids")
    .last_step("reindex", reindex, "re-extracts the index rows of one batch in set-based statements")
    .build()
)
