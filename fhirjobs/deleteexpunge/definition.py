"""The DELETE_EXPUNGE batch job definition, registered in `apps.py`: parameters, checks and steps (HAPI's)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from batch.api import JobDefinition, JobDefinitionBuilder
from fhirjobs.common.ranges import changed_url_problems, generate_key_ranges, load_keys
from fhirjobs.deleteexpunge.steps import delete_expunge, report

DELETE_EXPUNGE_JOB = "DELETE_EXPUNGE"  # the definition id: stored in every job row, never changes


def _problems(parameters: Mapping[str, Any]) -> Iterable[str]:
    return changed_url_problems(parameters, what="delete", done="delete-expunged")


DELETE_EXPUNGE: JobDefinition = (
    JobDefinitionBuilder(DELETE_EXPUNGE_JOB, 1, "Delete-expunge: delete the resources searches match, for good")
    .parameter("urls", list, default=[], items=str, description="Type? or Type?search: what to delete (1..*)")
    .parameter(
        "batch_size",
        int,
        default=1000,
        minimum=1,
        maximum=10_000,
        description="resources per chunk of the delete-expunge step (and per transaction)",
    )
    .parameter(
        "cascade", bool, default=False, description="delete the resources that refer to them too, instead of refusing"
    )
    .parameter(
        "cascade_max_rounds",
        int,
        default=10,
        minimum=1,
        maximum=100,
        description="with cascade: how many levels of referrers deep (HAPI's default: 10)",
    )
    .validate_with(_problems)
    .gated()  # every page listed before any is deleted: deleting cannot shift the walk
    .first_step("generate-ranges", generate_key_ranges, "splits each url's type into row key ranges, a chunk each")
    .intermediate_step("load-ids", load_keys, "the matching row keys of one range, one chunk per batch_size")
    .intermediate_step(
        "delete-expunge", delete_expunge, "deletes one page for good (rows, versions, index rows) in one transaction"
    )
    .reduction_step("report", report, "the counts per type")
    .build()
)
