"""The BULK_IMPORT batch job definition, registered in `apps.py`: parameters, checks and steps."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from batch.api import JobDefinition, JobDefinitionBuilder
from fhirjobs.bulkimport import undo
from fhirjobs.bulkimport.exceptions import InvalidImportRequest
from fhirjobs.bulkimport.sources import check_source
from fhirjobs.bulkimport.steps import (
    fetch_file,
    fetch_files,
    hold_types_again,
    list_files,
    load_deferred,
    load_resources,
    release_types,
    report,
)
from fhirjobs.bulkimport.undo import BULK_SUBMIT_UNDO_JOB

BULK_IMPORT_JOB = "BULK_IMPORT"  # the definition id: stored in every job row, never changes


def _check(parameters: Mapping[str, Any]) -> Iterable[str]:
    """Across parameters; the kick-off checked them for the client already, this guards other starters."""
    if not parameters["inputs"] and not parameters["manifest_url"]:
        yield "give inputs, or a manifest_url"
    urls = [item.get("url") for item in parameters["inputs"]]
    if parameters["manifest_url"]:
        urls.append(parameters["manifest_url"])
    for url in urls:
        if not isinstance(url, str):
            yield "every input needs a url"
            continue
        try:
            check_source(url)
        except InvalidImportRequest as error:
            yield error.message


def _builder(version: int) -> JobDefinitionBuilder:
    return (
        JobDefinitionBuilder(
            BULK_IMPORT_JOB, version, "FHIR bulk import ($import, $bulk-submit): NDJSON files into the store"
        )
        .gated()
        .parameter("import_id", str, required=True, description="the BulkImport row (owner, source credentials)")
        .parameter("inputs", list, default=[], items=dict, description="[{type, url}]: NDJSON files (http(s) or file)")
        .parameter("manifest_url", str, default="", description="a Bulk Data export manifest whose output to import")
        .parameter("base_url", str, required=True, description="the FHIR base URL, for the error file's URL")
        .parameter("chunk_size", int, default=1000, minimum=1, maximum=100_000, description="lines per load chunk")
        .validate_with(_check)
    )


def _loading(builder: JobDefinitionBuilder) -> JobDefinition:
    return (
        builder.intermediate_step(
            "load-resources", load_resources, "parse, check, resolve references, write (set-based)"
        )
        .intermediate_step("load-deferred", load_deferred, "lines whose conditional targets loaded in other chunks")
        .reduction_step("report", report, "counts per type, warnings, the error file")
        .counts_records_of("load-resources")  # every line once; load-deferred loads again some of them
        .on_completion(release_types)  # the hold against expunges taken at the kick-off
        .on_stop(release_types)
        .on_restart(hold_types_again)
        .build()
    )


BULK_IMPORT: JobDefinition = _loading(
    _builder(2)
    .first_step("list-files", list_files, "one chunk per input (a manifest's files too)")
    .intermediate_step("fetch-files", fetch_file, "streams one input, one chunk per chunk_size lines; stages ids")
)

# Version 1 split every input in one chunk. Kept registered so that imports started before version 2 can end
# (a running instance keeps its version); remove it in the release after.
BULK_IMPORT_V1: JobDefinition = _loading(
    _builder(1).first_step("fetch-files", fetch_files, "streams each input, one chunk per chunk_size lines; stages ids")
)

BULK_SUBMIT_UNDO: JobDefinition = (
    JobDefinitionBuilder(
        BULK_SUBMIT_UNDO_JOB,
        1,
        "Bulk Submit undo: resources imports created are removed, those they changed get their earlier version back",
    )
    .gated()
    .parameter("submission_id", str, required=True, description="the BulkSubmission whose imports are undone")
    .parameter("import_ids", list, required=True, items=str, description="the imports whose writes to take back")
    .parameter("keep_import_id", str, default="", description="a replacing import: what it brings is left alone")
    .parameter("batch_size", int, default=500, minimum=1, maximum=10_000, description="resources per undo chunk")
    .first_step("list-writes", undo.list_writes, "once the imports stopped writing: pages of what they wrote")
    .intermediate_step("undo", undo.undo, "one page reverted and its record dropped, in one transaction")
    .reduction_step("report", undo.report, "removed, restored, kept (written since by someone else)")
    .build()
)
