"""The TERMINOLOGY_UPLOAD, VALUESET_EXPAND and TERMINOLOGY_DELETE batch job definitions, registered in `apps.py`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from batch.api import JobDefinition, JobDefinitionBuilder
from fhirjobs.terminology.steps import (
    TERMINOLOGY_DELETE_JOB,
    TERMINOLOGY_UPLOAD_JOB,
    VALUESET_EXPAND_JOB,
    build_closure,
    delete_rows,
    expand_value_set,
    find_stale_value_sets,
    forget_version,
    load_concepts,
    make_current,
    plan_deletion,
    started_by_an_earlier_release,
)


def _files_are_references(parameters: Mapping[str, Any]) -> Iterable[str]:
    for number, reference in enumerate(parameters["files"], 1):
        if not isinstance(reference, dict) or not (reference.get("url") or reference.get("stored")):
            yield f"file {number} must be {{'url': …}} or {{'stored': <id>}}"


def _upload(version: int, chunk_concepts: str) -> JobDefinitionBuilder:
    return (
        JobDefinitionBuilder(TERMINOLOGY_UPLOAD_JOB, version, "Load a code system version: concepts, links, closure")
        .parameter("system", str, required=True, description="the code system URL")
        .parameter("version_id", int, required=True, minimum=1, description="the BUILDING CodeSystemVersion to fill")
        .parameter("version", str, default="", description="its label; empty: the one the files declare")
        .parameter("files", list, required=True, items=dict, description="{'url': …} or {'stored': id, 'name': …}")
        .parameter("make_current", bool, default=True, description="make it the current version at the end")
        .parameter("chunk_concepts", int, default=2000, minimum=1, maximum=50_000, description=chunk_concepts)
        .validate_with(_files_are_references)
        .gated()
    )


TERMINOLOGY_UPLOAD: JobDefinition = (
    _upload(2, "concepts per write transaction")
    .first_step("load-concepts", load_concepts, "streams the files into the tables, chunk_concepts per transaction")
    .intermediate_step("build-closure", build_closure, "the closure, level by level (one statement per level)")
    .reduction_step("make-current", make_current, "counts, and makes the version current (one transaction)")
    .build()
)

# The previous release's shape, kept so its uploads in flight at an upgrade fail with a reason (steps.py).
TERMINOLOGY_UPLOAD_V1: JobDefinition = (
    _upload(1, "concepts per write and closure chunk")
    .first_step("parse", started_by_an_earlier_release, "(v1) streamed the files into chunks of concepts")
    .intermediate_step("write-concepts", started_by_an_earlier_release, "(v1) wrote a chunk's concepts")
    .intermediate_step("build-closure", started_by_an_earlier_release, "(v1) a chunk's closure rows")
    .reduction_step("make-current", started_by_an_earlier_release, "(v1) made the version current")
    .build()
)

VALUESET_EXPAND: JobDefinition = (
    JobDefinitionBuilder(VALUESET_EXPAND_JOB, 1, "Pre-expand the stored ValueSets whose expansion is missing or stale")
    .first_step("find-stale-value-sets", find_stale_value_sets, "one chunk per stale ValueSet")
    .last_step("expand-value-set", expand_value_set, "expands one ValueSet into the expansion table")
    .build()
)

TERMINOLOGY_DELETE: JobDefinition = (
    JobDefinitionBuilder(TERMINOLOGY_DELETE_JOB, 1, "Delete a code system version in chunks, no long transaction")
    .parameter("version_id", int, required=True, minimum=1, description="the CodeSystemVersion to delete")
    .parameter("system", str, default="", description="its system (for the report)")
    .parameter("version", str, default="", description="its label (for the report)")
    .gated()
    .first_step("plan-deletion", plan_deletion, "the version stops answering; one chunk per table")
    .intermediate_step("delete-rows", delete_rows, "deletes one table's rows of the version, 10,000 per transaction")
    .reduction_step("forget-version", forget_version, "deletes the version's row; reports the rows deleted")
    .build()
)
