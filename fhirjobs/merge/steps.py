"""The steps of the MERGE and REPLACE_REFERENCES jobs, on the batch job-author API only.

query-ids → replace-references → finish-merge (gated); REPLACE_REFERENCES ends with finish-replace-references
instead, which writes the Provenance and completes the Task without touching the two resources. MERGE names
the patients by id (`source_patient`, `target_patient`), REPLACE_REFERENCES any two resources by reference
(`source`, `target`: `Type/id`). `query_ids` lists, once, every current resource that
refers to the source patient (one range scan of the reference index, whose key leads with the target: the set
is fixed when the job starts) and emits pages of batch_size ids of one type. `replace_references` points one
page's references at the target in one short transaction, together with the row recording the versions it
wrote (`MergedChunk`): run again, the page finds that row and writes nothing. `finish_merge` updates the two
patients, writes the Provenance (every rewritten version as a target) and completes the Task, in one
transaction; a Task already completed means it ran: it answers the same report.

The shared range walk (`fhirjobs.common.ranges`) is not used: it cuts a whole type into ranges of ids to search
each, where the referrers of one patient are one index range however large the store.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from itertools import groupby

from django.db import transaction

from batch.api import DataSink, RestartedJob, StepContext, StoppedJob
from fhirjobs.merge.models import MergedChunk
from fhirjobs.merge.patients import MERGE, REPLACE_REFERENCES, complete_merge, record_provenance, task_body
from fhirstore.authority import WriteAuthority
from fhirstore.exceptions import ResourceGone, ResourceNotFound
from fhirstore.referrers import referrer_keys, replace_references
from fhirstore.storage import StoredVersion, Write, read_resource, save_resources


def merge_authority(started_by: str) -> WriteAuthority:
    """A merge rewrites clinical resources, never SearchParameters (whatever refers to a patient)."""
    return WriteAuthority(manages_search_parameters=False, caller=started_by)


def referrer_pages(source: str, target: str, batch_size: int) -> Iterator[tuple[str, list[str]]]:
    """The referrers of `source` (`Type/id`; it and `target` left out), in pages of one type."""
    source_key, target_key = tuple(source.split("/")), tuple(target.split("/"))
    keys = referrer_keys(*source_key, excluding={source_key, target_key})
    for resource_type, group in groupby(keys, key=lambda key: key[0]):
        ids = [logical_id for _, logical_id in group]
        for start in range(0, len(ids), batch_size):
            yield resource_type, ids[start : start + batch_size]


def query_ids(context: StepContext, sink: DataSink) -> int:
    """One chunk `{type, ids}` per page of the resources referring to the source; how many resources."""
    found = 0
    for resource_type, ids in referrer_pages(*_source_and_target(context.parameters), context.parameters["batch_size"]):
        sink.accept({"type": resource_type, "ids": ids})
        found += len(ids)
    return found


def replace_references_step(context: StepContext, sink: DataSink) -> int:
    """Point one page's references to the source at the target; how many resources got a new version."""
    context.check_cancelled()
    parameters = context.parameters
    with transaction.atomic():
        done = MergedChunk.objects.filter(chunk_id=context.chunk_id).values_list("versions", flat=True).first()
        if done is not None:
            return len(done)
        written = replace_references(
            context.data["type"],
            context.data["ids"],
            *_source_and_target(parameters),
            authority=merge_authority(parameters["started_by"]),
        )
        MergedChunk.objects.create(
            chunk_id=context.chunk_id,
            job_instance_id=context.instance_id,
            versions=[version.versioned_reference for version in written],
        )
    return len(written)


def _source_and_target(parameters: dict) -> tuple[str, str]:
    if "source_patient" in parameters:
        return f"Patient/{parameters['source_patient']}", f"Patient/{parameters['target_patient']}"
    return parameters["source"], parameters["target"]


def _rewritten(context: StepContext) -> list[str]:
    return sorted(
        reference
        for versions in MergedChunk.objects.filter(job_instance_id=context.instance_id).values_list(
            "versions", flat=True
        )
        for reference in versions
    )


def _task_provenance(task: dict) -> str:
    """The Provenance reference a completed merge's Task lists among its outputs."""
    return next(
        output["valueReference"]["reference"] for output in task["output"] if output["type"]["text"] == "provenance"
    )


def finish_merge(context: StepContext, inputs: Iterable[dict]) -> dict:
    """The two patients, the Provenance and the Task, in one transaction; the report."""
    parameters = context.parameters
    rewritten = _rewritten(context)
    with transaction.atomic():
        task = read_resource("Task", parameters["task_id"])
        if task.body["status"] == "completed":  # this step ran before and committed: report what it wrote
            return _report(rewritten, parameters, _task_provenance(task.body))
        authority = merge_authority(parameters["started_by"])
        merged = complete_merge(
            parameters["source_patient"],
            parameters["target_patient"],
            result_patient=parameters["result_patient"] or None,
            delete_source=parameters["delete_source"],
            rewritten=rewritten,
            started_by=parameters["started_by"],
            authority=authority,
        )
        report = _report(rewritten, parameters, f"Provenance/{merged.provenance_id}")
        output = [
            {"type": {"text": "result-patient"}, "valueReference": {"reference": merged.target.versioned_reference}},
            {"type": {"text": "provenance"}, "valueReference": {"reference": report["provenance"]}},
            {"type": {"text": "resources-updated"}, "valueInteger": report["total"]},
        ]
        _complete_task(context, task, MERGE, output, authority)
    return report


def finish_replace_references(context: StepContext, inputs: Iterable[dict]) -> dict:
    """The Provenance and the Task, in one transaction; the report."""
    parameters = context.parameters
    rewritten = _rewritten(context)
    with transaction.atomic():
        task = read_resource("Task", parameters["task_id"])
        if task.body["status"] == "completed":  # this step ran before and committed: report what it wrote
            return _report(rewritten, parameters, _task_provenance(task.body))
        authority = merge_authority(parameters["started_by"])
        provenance_id = record_provenance(
            rewritten, activity="update", started_by=parameters["started_by"], authority=authority
        )
        report = _report(rewritten, parameters, f"Provenance/{provenance_id}")
        output = [
            {"type": {"text": "provenance"}, "valueReference": {"reference": report["provenance"]}},
            {"type": {"text": "resources-updated"}, "valueInteger": report["total"]},
        ]
        _complete_task(context, task, REPLACE_REFERENCES, output, authority)
    return report


def _complete_task(
    context: StepContext, task: StoredVersion, operation: str, output: list[dict], authority: WriteAuthority
) -> None:
    """The job's Task, completed with its outputs, if no one changed it since it was read (in the caller's
    transaction, beside the Provenance)."""
    parameters = context.parameters
    body = task_body(
        parameters["task_id"],
        str(context.instance_id),
        *_source_and_target(parameters),
        operation=operation,
        status="completed",
        output=output,
    )
    save_resources([Write(body, if_match=task.version_id)], authority=authority)


TASK_STATUS_OF_STOPPED_JOB = {"FAILED": "failed", "CANCELLED": "cancelled"}


def stop_task(job: StoppedJob) -> None:
    """The job's stop handler (HAPI's error-handler step): a failed or cancelled job's Task says so, with the
    job's error as its `statusReason`, so no client follows an `in-progress` Task forever. A Task completed
    already stays: the finishing step's transaction (the patients, the Provenance, the Task) won the race."""
    parameters = job.parameters
    try:
        task = read_resource("Task", parameters["task_id"])
    except (ResourceNotFound, ResourceGone):
        return
    if task.body["status"] == "completed":
        return
    operation = MERGE if "source_patient" in parameters else REPLACE_REFERENCES
    body = task_body(
        parameters["task_id"],
        str(job.instance_id),
        *_source_and_target(parameters),
        operation=operation,
        status=TASK_STATUS_OF_STOPPED_JOB[job.status],
    )
    if job.error_message:
        body["statusReason"] = {"text": job.error_message}
    save_resources([Write(body, if_match=task.version_id)], authority=merge_authority(parameters["started_by"]))


def resume_task(job: RestartedJob) -> None:
    """The job's restart handler: a restarted job's Task is `in-progress` again (its `statusReason` gone), so a
    client following it does not take the `failed` or `cancelled` of the stop for the end. A Task completed
    meanwhile stays completed; the write carries the version it read (If-Match), so it never overwrites one."""
    parameters = job.parameters
    try:
        task = read_resource("Task", parameters["task_id"])
    except (ResourceNotFound, ResourceGone):
        return
    if task.body["status"] not in TASK_STATUS_OF_STOPPED_JOB.values():
        return
    operation = MERGE if "source_patient" in parameters else REPLACE_REFERENCES
    body = task_body(parameters["task_id"], str(job.instance_id), *_source_and_target(parameters), operation=operation)
    save_resources([Write(body, if_match=task.version_id)], authority=merge_authority(parameters["started_by"]))


def _report(rewritten: list[str], parameters: dict, provenance: str) -> dict:
    counts = Counter(reference.partition("/")[0] for reference in rewritten)
    return {
        "updated": dict(sorted(counts.items())),
        "total": len(rewritten),
        "provenance": provenance,
        "task": f"Task/{parameters['task_id']}",
        "target": _source_and_target(parameters)[1],
    }
