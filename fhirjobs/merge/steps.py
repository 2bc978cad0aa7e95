"""The steps of the MERGE job, on the batch job-author API only.

query-ids → replace-references → finish-merge (gated). `query_ids` lists, once, every current resource that
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

from batch.api import DataSink, StepContext
from fhirjobs.merge.models import MergedChunk
from fhirjobs.merge.patients import complete_merge, task_body
from fhirstore.authority import WriteAuthority
from fhirstore.referrers import referrer_keys, replace_references
from fhirstore.storage import Write, read_resource, save_resources


def merge_authority(started_by: str) -> WriteAuthority:
    """A merge rewrites clinical resources, never SearchParameters (whatever refers to a patient)."""
    return WriteAuthority(manages_search_parameters=False, caller=started_by)


def referrer_pages(source_id: str, target_id: str, batch_size: int) -> Iterator[tuple[str, list[str]]]:
    """The referrers of the source (the two patients themselves left out), in pages of one type."""
    keys = referrer_keys("Patient", source_id, excluding={("Patient", source_id), ("Patient", target_id)})
    for resource_type, group in groupby(keys, key=lambda key: key[0]):
        ids = [logical_id for _, logical_id in group]
        for start in range(0, len(ids), batch_size):
            yield resource_type, ids[start:start + batch_size]


def query_ids(context: StepContext, sink: DataSink) -> int:
    """One chunk `{type, ids}` per page of the resources referring to the source; how many resources."""
    parameters, found = context.parameters, 0
    for resource_type, ids in referrer_pages(parameters["source_patient"], parameters["target_patient"],
                                             parameters["batch_size"]):
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
        written = replace_references(context.data["type"], context.data["ids"],
                                     f"Patient/{parameters['source_patient']}", f"Patient/{parameters['target_patient']}",
                                     authority=merge_authority(parameters["started_by"]))
        MergedChunk.objects.create(chunk_id=context.chunk_id, job_instance_id=context.instance_id,
                                   versions=[version.versioned_reference for version in written])
    return len(written)


def finish_merge(context: StepContext, inputs: Iterable[dict]) -> dict:
    """The two patients, the Provenance and the Task, in one transaction; the report."""
    parameters = context.parameters
    rewritten = sorted(reference for versions in MergedChunk.objects.filter(job_instance_id=context.instance_id)
                       .values_list("versions", flat=True) for reference in versions)
    with transaction.atomic():
        task = read_resource("Task", parameters["task_id"])
        if task.body["status"] == "completed":
            provenance = next(output["valueReference"]["reference"] for output in task.body["output"]
                              if output["type"]["text"] == "provenance")
            return _report(rewritten, parameters, provenance)
        authority = merge_authority(parameters["started_by"])
        merged = complete_merge(parameters["source_patient"], parameters["target_patient"],
                                result_patient=parameters["result_patient"] or None,
                                delete_source=parameters["delete_source"], rewritten=rewritten,
                                started_by=parameters["started_by"], authority=authority)
        report = _report(rewritten, parameters, f"Provenance/{merged.provenance_id}")
        output = [{"type": {"text": "result-patient"}, "valueReference": {"reference": merged.target.versioned_reference}},
                  {"type": {"text": "provenance"}, "valueReference": {"reference": report["provenance"]}},
                  {"type": {"text": "resources-updated"}, "valueInteger": report["total"]}]
        save_resources([Write(task_body(parameters["task_id"], str(context.instance_id), parameters["source_patient"],
                                        parameters["target_patient"], status="completed", output=output),
                              if_match=task.version_id)], authority=authority)
    return report


def _report(rewritten: list[str], parameters: dict, provenance: str) -> dict:
    counts = Counter(reference.partition("/")[0] for reference in rewritten)
    return {"updated": dict(sorted(counts.items())), "total": len(rewritten), "provenance": provenance,
            "task": f"Task/{parameters['task_id']}", "target": f"Patient/{parameters['target_patient']}"}
