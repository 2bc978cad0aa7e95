"""The BULK_EXPORT batch job definition, registered in `apps.py`: parameters, checks and steps."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from batch.api import JobDefinition, JobDefinitionBuilder
from fhirjobs.bulkexport.parameters import Level
from fhirjobs.bulkexport.steps import (
    create_report,
    expand_resources,
    fetch_resources,
    hold_again,
    release_hold,
    write_to_binaries,
)
from fhirstore.exceptions import InvalidRequest
from fhirstore.resource_types import RESOURCE_TYPES
from fhirstore.search import type_filter

BULK_EXPORT_JOB = "BULK_EXPORT"  # the definition id: stored in every job row, never changes


def _check(parameters: Mapping[str, Any]) -> Iterable[str]:
    """Across parameters; the kick-off checked them for the client already, this guards other starters."""
    unknown = sorted(set(parameters["types"]) - RESOURCE_TYPES)
    if unknown:
        yield f"unknown resource types: {', '.join(unknown)}"
    for expression in parameters["type_filters"]:
        try:
            type_filter(expression)
        except InvalidRequest as error:
            yield f"type filter {expression!r}: {error.message}"
    if parameters["level"] == Level.GROUP and not parameters["group_id"]:
        yield "a group export needs group_id"
    if parameters["level"] != Level.PATIENT and parameters["patients"]:
        yield "patients are only for a patient-level export"


def _definition(version: int, *, until: bool, organized: bool, first_file_early: bool = False) -> JobDefinition:
    builder = (
        JobDefinitionBuilder(
            BULK_EXPORT_JOB, version, "FHIR Bulk Data $export: resources to NDJSON files and a manifest"
        )
        .gated()
        .parameter("export_id", str, required=True, description="the BulkExport row")
        .parameter("level", str, required=True, choices=[level.value for level in Level])
        .parameter("types", list, required=True, items=str, description="resource types, in export order")
        .parameter("since", str, description="FHIR instant: resources changed at or after it")
        .parameter("type_filters", list, default=[], items=str, description="_typeFilter: Type?query")
        .parameter("elements", list, default=[], items=str, description="_elements: name or Type.name")
        .parameter("patients", list, default=[], items=str, description="Patient ids (patient level)")
        .parameter("group_id", str, description="the Group (group level)")
        .parameter("base_url", str, required=True, description="the FHIR base URL the client used, for file URLs")
        .parameter("request_url", str, required=True, description="the kick-off URL, for the manifest")
        .parameter("transaction_time", str, required=True, description="FHIR instant of the kick-off")
        .parameter("chunk_size", int, default=1000, minimum=1, description="ids per chunk (and file)")
        .parameter("row_ranges", bool, default=False, description="walk the whole store by ranges of row ids")
    )
    if until:
        builder = builder.parameter("until", str, description="FHIR instant (_until): the store as it was then")
    if organized:
        builder = (
            builder.parameter(
                "organize_output_by",
                str,
                choices=["Patient"],
                description="organizeOutputBy: files of Patient blocks (header, Patient, its compartment)",
            )
            .parameter("patients_per_file", int, default=100, minimum=1, description="Patient blocks per file")
            .parameter(
                "associated_data",
                str,
                choices=["LatestProvenanceResources", "RelevantProvenanceResources"],
                description="includeAssociatedData: the Provenance of the exported resources to add",
            )
        )
    if first_file_early:
        builder = builder.parameter(
            "pages_per_chunk", int, default=128, minimum=1, description="row ranges or Patient pages per fetch chunk"
        ).parameter(
            "first_range_rows", int, default=1000, minimum=1, description="the first row range's width: listed first"
        )
    return (
        builder.validate_with(_check)
        .on_completion(release_hold)  # the snapshot hold taken at the kick-off: expunges of its types may go on
        .on_stop(release_hold)
        .on_restart(hold_again)  # taken again as of its transactionTime (lapsed if its types were expunged since)
        .first_step("fetch-resources", fetch_resources, "walks the matching ids, one chunk per chunk_size ids")
        .intermediate_step("expand-resources", expand_resources, "loads the bodies; _elements")
        .intermediate_step("write-to-binaries", write_to_binaries, "one NDJSON file per chunk")
        .reduction_step("create-report", create_report, "the manifest")
        .build()
    )


# Version 4 added `pages_per_chunk` and `first_range_rows`: a whole-store walk cuts its first row range narrow and
# packs more ranges into each fetch chunk, so its first file is written, and listed by a partial manifest, sooner;
# an export organized by Patient packs its pages of patients likewise ({patient_pages}, split by `expand`). The
# walk emits other chunks than version 3's, so a version 3 export must keep version 3's (its rerun fetch chunk must
# emit the same pages: the steps read the missing parameters as version 3's 8 ranges, none narrow, one page).
BULK_EXPORT: JobDefinition = _definition(4, until=True, organized=True, first_file_early=True)
# Version 3 added `organize_output_by`, `patients_per_file` (STU3's `organizeOutputBy`) and `associated_data`
# (`includeAssociatedData`).
BULK_EXPORT_V3: JobDefinition = _definition(3, until=True, organized=True)
# Version 2 added `until` (STU3's `_until`). Versions 1 to 3 are kept registered so that exports started
# before version 4 can end (a running instance keeps its version; the steps read a missing `until` as none
# and a missing `organize_output_by` as organized by type); remove them in the release after.
BULK_EXPORT_V2: JobDefinition = _definition(2, until=True, organized=False)
BULK_EXPORT_V1: JobDefinition = _definition(1, until=False, organized=False)
