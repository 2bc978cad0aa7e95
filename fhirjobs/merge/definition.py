"""The MERGE and REPLACE_REFERENCES batch job definitions, registered in `apps.py`: Patient `$merge` and
`$hapi.fhir.replace-references` when asked asynchronously."""

from __future__ import annotations

from batch.api import JobDefinition, JobDefinitionBuilder
from fhirjobs.merge.steps import (
    finish_merge,
    finish_replace_references,
    query_ids,
    replace_references_step,
    resume_task,
    stop_task,
)

MERGE_JOB = "MERGE"  # the definition ids: stored in every job row, never change
REPLACE_REFERENCES_JOB = "REPLACE_REFERENCES"

MERGE: JobDefinition = (
    JobDefinitionBuilder(MERGE_JOB, 1, "Patient merge: point every reference to the source patient at the target")
    .parameter("source_patient", str, required=True, description="the source Patient's id (merged away)")
    .parameter("target_patient", str, required=True, description="the target Patient's id (it survives)")
    .parameter("task_id", str, required=True, description="the id of the Task that follows the merge")
    .parameter("started_by", str, default="", description="who asked: the Provenance's agent")
    .parameter("result_patient", dict, default={}, description="the target as the client wants it; {}: merged")
    .parameter("delete_source", bool, default=False, description="delete the source instead of linking it")
    .parameter(
        "batch_size",
        int,
        default=512,
        minimum=1,
        maximum=10_000,
        description="resources per chunk of the replace-references step (and per transaction)",
    )
    .gated()  # every referrer listed before the first is rewritten (rewriting changes the reference index)
    .first_step("query-ids", query_ids, "lists the resources referring to the source, one chunk per batch_size")
    .intermediate_step(
        "replace-references",
        replace_references_step,
        "points one page's references at the target, a new version each, in one transaction",
    )
    .reduction_step("finish-merge", finish_merge, "updates both patients, writes the Provenance, completes the Task")
    .on_stop(stop_task)  # a failed or cancelled job's Task says so
    .on_restart(resume_task)  # and a restarted one's is in progress again
    .build()
)

REPLACE_REFERENCES: JobDefinition = (
    JobDefinitionBuilder(
        REPLACE_REFERENCES_JOB, 1, "Replace references: point every reference to one resource at another"
    )
    .parameter("source", str, required=True, description="Type/id: the resource whose referrers are rewritten")
    .parameter("target", str, required=True, description="Type/id: what they refer to afterwards")
    .parameter("task_id", str, required=True, description="the id of the Task that follows the job")
    .parameter("started_by", str, default="", description="who asked: the Provenance's agent")
    .parameter(
        "batch_size",
        int,
        default=512,
        minimum=1,
        maximum=10_000,
        description="resources per chunk of the replace-references step (and per transaction)",
    )
    .gated()
    .first_step("query-ids", query_ids, "lists the resources referring to the source, one chunk per batch_size")
    .intermediate_step(
        "replace-references",
        replace_references_step,
        "points one page's references at the target, a new version each, in one transaction",
    )
    .reduction_step("finish-replace-references", finish_replace_references, "writes the Provenance, completes the Task")
    .on_stop(stop_task)
    .on_restart(resume_task)
    .build()
)
