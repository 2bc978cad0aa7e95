"""The merge of two patient records, shared by the synchronous merge and the MERGE job's last step.

Resolving: a patient given by identifiers must be the one patient having all of them. Completing (after every
referrer points at the target): the target becomes `result-patient` if given, or else gains the source's
identifiers it lacks (`use: old`); unless the source is deleted (`delete-source`), the target links to it
(`replaces`) and the source links to the target (`replaced-by`) and is made inactive. A `Provenance` records
the merge (activity `merge`, ISO 21089) with the new version of every resource the merge wrote as its targets.
The Task of an asynchronous merge has the job's id as an identifier, and its outputs once done.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote

from fhirjobs.merge.exceptions import MergeNotPossible
from fhirstore.authority import WriteAuthority
from fhirstore.exceptions import ResourceGone, ResourceNotFound
from fhirstore.fhirdates import format_instant
from fhirstore.search import find_logical_ids
from fhirstore.storage import StoredVersion, Write, delete_resource, new_logical_id, read_resource, save_resources

LIFECYCLE = "http://terminology.hl7.org/CodeSystem/iso-21089-lifecycle"
LIFECYCLE_EVENTS = {"merge": "Merge Record Lifecycle Event", "update": "Update/Amend Record Lifecycle Event"}
JOB_ID_SYSTEM = "http://hapifhir.io/batch/jobId"  # HAPI's: the Task names the batch job by this identifier
MERGE, REPLACE_REFERENCES = "Patient/$merge", "$hapi.fhir.replace-references"
TASK_INPUTS = {
    MERGE: ("source-patient", "target-patient"),
    REPLACE_REFERENCES: ("source-reference-id", "target-reference-id"),
}


@dataclass(frozen=True)
class CompletedMerge:
    target: StoredVersion  # the target patient as merged
    provenance_id: str


def resolve_patient(logical_id: str | None, identifiers: Sequence[dict], role: str) -> StoredVersion:
    """The current source or target patient; MergeNotPossible (422) when it is unknown, deleted, or its
    identifiers match no patient or several."""
    if logical_id is None:
        query = "&".join(
            "identifier="
            + quote(f"{_escaped(identifier.get('system') or '')}|{_escaped(identifier['value'])}", safe="|")
            for identifier in identifiers
        )
        found = find_logical_ids(f"Patient?{query}")
        if len(found) != 1:
            raise MergeNotPossible(
                f"the {role}-patient-identifier {'match no patient' if not found else 'match several'}"
                f" patients ({query.replace('&', ', ')})"
            )
        logical_id = found[0]
    try:
        return read_resource("Patient", logical_id)
    except (ResourceNotFound, ResourceGone):
        raise MergeNotPossible(f"{role} patient Patient/{logical_id} does not exist or is deleted") from None


def _escaped(value: str) -> str:
    """A search value with FHIR's escapes (`\\`, `,`, `|`, `$`)."""
    for character in "\\,|$":
        value = value.replace(character, "\\" + character)
    return value


def check_mergeable(source: StoredVersion, target: StoredVersion) -> None:
    if source.logical_id == target.logical_id:
        raise MergeNotPossible("the source and target patients are the same patient")
    for role, patient in (("source", source), ("target", target)):
        replaced_by = [link for link in patient.body.get("link") or [] if link.get("type") == "replaced-by"]
        if replaced_by:
            raise MergeNotPossible(
                f"the {role} patient Patient/{patient.logical_id} was merged already (it is "
                f"replaced by {replaced_by[0].get('other', {}).get('reference')})"
            )


def merged_target(
    source: StoredVersion, target: StoredVersion, result_patient: dict | None, delete_source: bool
) -> dict:
    """The target patient as the merge leaves it."""
    if result_patient is not None:
        body = {name: value for name, value in copy.deepcopy(result_patient).items() if name != "meta"}
    else:
        body = copy.deepcopy(target.body)
        known = {(identifier.get("system"), identifier.get("value")) for identifier in body.get("identifier") or []}
        copied = [
            {**identifier, "use": "old"}
            for identifier in source.body.get("identifier") or []
            if (identifier.get("system"), identifier.get("value")) not in known
        ]
        if copied:
            body["identifier"] = (body.get("identifier") or []) + copied
    source_reference = f"Patient/{source.logical_id}"
    if not delete_source and not any(
        link.get("other", {}).get("reference") == source_reference for link in body.get("link") or []
    ):
        body["link"] = (body.get("link") or []) + [{"other": {"reference": source_reference}, "type": "replaces"}]
    return body


def complete_merge(
    source_id: str,
    target_id: str,
    *,
    result_patient: dict | None,
    delete_source: bool,
    rewritten: Sequence[str],
    started_by: str,
    authority: WriteAuthority,
) -> CompletedMerge:
    """Update (or delete) the source and update the target, then record the Provenance; in the caller's
    transaction, after every referrer points at the target. `rewritten`: the versions the merge wrote."""
    source, target = read_resource("Patient", source_id), read_resource("Patient", target_id)
    target_body = merged_target(source, target, result_patient, delete_source)
    writes = [Write(target_body, if_match=target.version_id)]
    if not delete_source:
        source_body = copy.deepcopy(source.body)
        source_body["active"] = False
        source_body["link"] = (source_body.get("link") or []) + [
            {"other": {"reference": f"Patient/{target_id}"}, "type": "replaced-by"}
        ]
        writes.append(Write(source_body, if_match=source.version_id))
    patients = save_resources(writes, authority=authority)
    if delete_source:
        patients.append(delete_resource("Patient", source_id, authority=authority, if_match=source.version_id))
    provenance_id = record_provenance(
        [version.versioned_reference for version in patients if not version.deleted] + list(rewritten),
        activity="merge",
        started_by=started_by,
        authority=authority,
        removed=patients[-1].versioned_reference if delete_source else None,
    )
    return CompletedMerge(patients[0], provenance_id)


def record_provenance(
    targets: Sequence[str], *, activity: str, started_by: str, authority: WriteAuthority, removed: str | None = None
) -> str:
    """A Provenance of these versions (ISO 21089 lifecycle `merge` or `update`), by the caller; its id."""
    provenance = {
        "resourceType": "Provenance",
        "id": new_logical_id(),
        "target": [{"reference": reference} for reference in targets],
        "recorded": format_instant(datetime.now(UTC)),
        "activity": {"coding": [{"system": LIFECYCLE, "code": activity, "display": LIFECYCLE_EVENTS[activity]}]},
        "agent": [{"who": {"display": started_by}}],
    }
    if removed is not None:
        provenance["entity"] = [{"role": "removal", "what": {"reference": removed}}]
    save_resources([Write(provenance)], authority=authority)
    return provenance["id"]


def task_body(
    task_id: str,
    job_id: str,
    source: str,
    target: str,
    *,
    operation: str = MERGE,
    status: str = "in-progress",
    output: Sequence[dict] = (),
) -> dict:
    """The Task that follows an asynchronous merge or replace-references (`GET /fhir/Task/[id]`); `source` and
    `target` are references (`Patient/a`)."""
    source_input, target_input = TASK_INPUTS[operation]
    task = {
        "resourceType": "Task",
        "id": task_id,
        "status": status,
        "intent": "order",
        "identifier": [{"system": JOB_ID_SYSTEM, "value": job_id}],
        "code": {"text": operation},
        "input": [
            {"type": {"text": source_input}, "valueReference": {"reference": source}},
            {"type": {"text": target_input}, "valueReference": {"reference": target}},
        ],
    }
    if output:
        task["output"] = list(output)
    return task
