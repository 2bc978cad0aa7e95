"""`Patient/$merge` requests ⇄ a MergeRequest, and its answers as the Parameters HAPI returns.

The parameter names are FHIR's (and HAPI's): `source-patient` or `source-patient-identifier` (0..*),
`target-patient` or `target-patient-identifier` (0..*), `result-patient`, `preview`, `delete-source`,
`batch-size`. The answer is a Parameters with `input` (the request as given), `outcome` (an
OperationOutcome), and `result` (the target patient as merged, or as it would be for a preview) or `task`
(the Task that follows an asynchronous merge).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from fhirjobs.merge.exceptions import InvalidMergeRequest
from fhirstore.exceptions import InvalidRequest

PATIENT_REFERENCE = re.compile(r"^Patient/([A-Za-z0-9\-.]{1,64})(/_history/\d+)?$")
_KINDS = {
    "source-patient": "valueReference",
    "source-patient-identifier": "valueIdentifier",
    "target-patient": "valueReference",
    "target-patient-identifier": "valueIdentifier",
    "result-patient": "resource",
    "preview": "valueBoolean",
    "delete-source": "valueBoolean",
    "batch-size": "valueInteger",
}
_ONCE = ("source-patient", "target-patient", "result-patient", "preview", "delete-source", "batch-size")
_TYPES = {
    "valueReference": dict,
    "valueIdentifier": dict,
    "resource": dict,
    "valueBoolean": bool,
    "valueInteger": int,
    "valueString": str,
}


@dataclass(frozen=True)
class MergeRequest:
    source_id: str | None = None  # by reference (the logical id), or
    source_identifiers: tuple[dict, ...] = ()  # by identifiers, all of which the one patient must have
    target_id: str | None = None
    target_identifiers: tuple[dict, ...] = ()
    result_patient: dict | None = None  # the target as the client wants it after the merge
    preview: bool = False
    delete_source: bool = False
    batch_size: int | None = None  # None: the job's default
    given: dict = field(default_factory=dict, compare=False)  # the Parameters as given: the answer's `input`


def parse_merge_parameters(body: object) -> MergeRequest:
    """A `$merge` Parameters body as a request; InvalidMergeRequest (400) lists every problem."""
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise InvalidRequest("Patient/$merge takes a Parameters resource")
    collected: dict[str, list] = {name: [] for name in _KINDS}
    problems = []
    for parameter in body.get("parameter") or []:
        name = parameter.get("name") if isinstance(parameter, dict) else None
        kind = _KINDS.get(name)
        value = parameter.get(kind) if kind else None
        if (
            kind is not None
            and isinstance(value, _TYPES[kind])
            and (kind == "valueBoolean" or not isinstance(value, bool))
        ):
            collected[name].append(value)
        else:
            problems.append(f"parameter {name!r} is not understood ({', '.join(_KINDS)}) or has no {kind or 'value'}")
    problems += [f"{name} may be given once" for name in _ONCE if len(collected[name]) > 1]
    source_id = _patient_id(collected["source-patient"], "source-patient", problems)
    target_id = _patient_id(collected["target-patient"], "target-patient", problems)
    for role in ("source", "target"):
        by_reference, by_identifier = collected[f"{role}-patient"], collected[f"{role}-patient-identifier"]
        if bool(by_reference) == bool(by_identifier):
            problems.append(f"give the {role} patient by {role}-patient or by {role}-patient-identifier (one of them)")
        problems += [
            f"{role}-patient-identifier {identifier} needs a value"
            for identifier in by_identifier
            if not isinstance(identifier.get("value"), str)
        ]
    if source_id is not None and source_id == target_id:
        problems.append("source-patient and target-patient are the same patient")
    result = next(iter(collected["result-patient"]), None)
    if result is not None and result.get("resourceType") != "Patient":
        problems.append("result-patient must be a Patient")
    elif result is not None and target_id is not None and result.get("id") != target_id:
        problems.append(f"result-patient must have the target's id ({target_id!r}), it has {result.get('id')!r}")
    batch_size = next(iter(collected["batch-size"]), None)
    if batch_size is not None and batch_size < 1:
        problems.append("batch-size must be at least 1")
    if problems:
        raise InvalidMergeRequest(problems)
    return MergeRequest(
        source_id,
        tuple(collected["source-patient-identifier"]),
        target_id,
        tuple(collected["target-patient-identifier"]),
        result,
        next(iter(collected["preview"]), False),
        next(iter(collected["delete-source"]), False),
        batch_size,
        body,
    )


def _patient_id(references: list[dict], name: str, problems: list[str]) -> str | None:
    if len(references) != 1:
        return None
    match = PATIENT_REFERENCE.match(str(references[0].get("reference", "")))
    if match is None:
        problems.append(f"{name} must be a reference Patient/<id>, got {references[0].get('reference')!r}")
        return None
    return match.group(1)


def information(*messages: str) -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "information", "code": "informational", "diagnostics": message} for message in messages],
    }


def merge_answer(
    request: MergeRequest, outcome: dict, *, result: dict | None = None, task: dict | None = None
) -> dict[str, Any]:
    """HAPI's answer: `input`, `outcome`, then `result` (the target patient) or `task`."""
    parameters = [{"name": "input", "resource": request.given}, {"name": "outcome", "resource": outcome}]
    if result is not None:
        parameters.append({"name": "result", "resource": result})
    if task is not None:
        parameters.append({"name": "task", "resource": task})
    return {"resourceType": "Parameters", "parameter": parameters}


REFERENCE = re.compile(r"^([A-Z][A-Za-z]{1,63})/([A-Za-z0-9\-.]{1,64})$")
_REPLACE_KINDS = {
    "source-reference-id": "valueString",
    "target-reference-id": "valueString",
    "resource-limit": "valueInteger",
}


@dataclass(frozen=True)
class ReplaceReferencesRequest:
    source: str  # Type/id
    target: str  # Type/id, of the same type
    resource_limit: int = 512  # HAPI's default: at most this many referrers rewritten synchronously


def parse_replace_references_parameters(body: object) -> ReplaceReferencesRequest:
    """A `$hapi.fhir.replace-references` Parameters body (HAPI's names: source-reference-id,
    target-reference-id, resource-limit); InvalidMergeRequest (400) lists every problem."""
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise InvalidRequest("$hapi.fhir.replace-references takes a Parameters resource")
    values: dict[str, list] = {name: [] for name in _REPLACE_KINDS}
    problems = []
    for parameter in body.get("parameter") or []:
        name = parameter.get("name") if isinstance(parameter, dict) else None
        kind = _REPLACE_KINDS.get(name)
        value = parameter.get(kind) if kind else None
        if kind is not None and isinstance(value, _TYPES.get(kind, str)) and not isinstance(value, bool):
            values[name].append(value)
        else:
            problems.append(
                f"parameter {name!r} is not understood ({', '.join(_REPLACE_KINDS)}) or has no {kind or 'value'}"
            )
    problems += [f"{name} may be given once" for name, given in values.items() if len(given) > 1]
    references = {}
    for name in ("source-reference-id", "target-reference-id"):
        given = next(iter(values[name]), None)
        if given is None:
            problems.append(f"{name} is needed (Type/id)")
        elif REFERENCE.match(given) is None:
            problems.append(f"{name} must be Type/id, got {given!r}")
        else:
            references[name] = given
    if len(references) == 2:
        source, target = references["source-reference-id"], references["target-reference-id"]
        if source.partition("/")[0] != target.partition("/")[0]:
            problems.append("source-reference-id and target-reference-id must be of the same resource type")
        elif source == target:
            problems.append("source-reference-id and target-reference-id are the same resource")
    limit = next(iter(values["resource-limit"]), 512)
    if limit < 1:
        problems.append("resource-limit must be at least 1")
    if problems:
        raise InvalidMergeRequest(problems)
    return ReplaceReferencesRequest(references["source-reference-id"], references["target-reference-id"], limit)
