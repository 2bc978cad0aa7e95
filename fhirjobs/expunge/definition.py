"""The EXPUNGE batch job definitions (a type, or every stored type), registered in `apps.py`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from batch.api import JobDefinition, JobDefinitionBuilder
from fhirjobs.common.ranges import generate_key_ranges, generate_ranges, load_every_key, load_ids, url_problems
from fhirjobs.expunge.steps import expunge, expunge_page, report, report_v1

EXPUNGE_JOB = "EXPUNGE"  # the definition id: stored in every job row, never changes


def _problems(parameters: Mapping[str, Any]) -> Iterable[str]:
    """The urls must be searches the store can run; something must be asked; everything only of every type."""
    yield from url_problems(parameters)
    if not any(parameters[kind] for kind in ("deleted_resources", "previous_versions", "everything")):
        yield "nothing to expunge: deleted_resources, previous_versions or everything must be true"
    if parameters["everything"] and parameters["urls"]:
        yield "everything is expunged of every type (no urls)"


EXPUNGE: JobDefinition = (
    JobDefinitionBuilder(EXPUNGE_JOB, 2, "Expunge: deleted resources, previous versions or everything, for good")
    .parameter("urls", list, default=[], items=str, description="Type?: the types to expunge; none: every type")
    .parameter("deleted_resources", bool, default=False, description="expungeDeletedResources")
    .parameter("previous_versions", bool, default=False, description="expungePreviousVersions")
    .parameter("everything", bool, default=False, description="expungeEverything (system level)")
    .parameter("limit", int, minimum=1, description="the most versions removed (current ones included); none: all")
    .parameter(
        "batch_size",
        int,
        default=1000,
        minimum=1,
        maximum=10_000,
        description="resources per chunk of the expunge step (and per transaction)",
    )
    .validate_with(_problems)
    .gated()  # the report reads every page's record
    .first_step("generate-ranges", generate_key_ranges, "splits each type's row keys into ranges, one chunk each")
    .intermediate_step("load-keys", load_every_key, "the keys of one range, deleted rows too, batch_size a chunk")
    .intermediate_step("expunge", expunge_page, "expunges what was asked of one page, in one transaction")
    .reduction_step("report", report, "the versions removed")
    .build()
)

# The previous release's shape (previous versions of one type, pages by logical id): its jobs in flight at an
# upgrade run to their end on it.
EXPUNGE_V1: JobDefinition = (
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
    .gated()
    .first_step("generate-ranges", generate_ranges, "splits the type's resources into id ranges, one chunk each")
    .intermediate_step("load-ids", load_ids, "the ids of one range, one chunk per batch_size ids")
    .intermediate_step("expunge", expunge, "deletes the previous versions of one page in one transaction")
    .reduction_step("report", report_v1, "the versions removed")
    .build()
)
