"""FHIRPath Patch: each operation as the spec defines it, on the path subset the store addresses, and the
patches and paths refused (400 when parsed, PatchFailed when a resource cannot take them)."""

from __future__ import annotations

import pytest

from fhirstore.exceptions import InvalidRequest
from fhirstore.fhirpatch import PatchFailed, apply_patch, parse_patch


def operation(kind: str, path: str, **parts) -> dict:
    found = [{"name": "type", "valueCode": kind}, {"name": "path", "valueString": path}]
    for name, value in parts.items():
        if name == "name":
            found.append({"name": "name", "valueString": value})
        elif name in ("index", "source", "destination"):
            found.append({"name": name, "valueInteger": value})
        else:  # value, given as its value[x] key
            found.append({"name": "value", name: value})
    return {"name": "operation", "part": found}


def patched(resource: dict, *operations: dict) -> dict:
    return apply_patch(resource, parse_patch({"resourceType": "Parameters", "parameter": list(operations)}))


PATIENT = {
    "resourceType": "Patient",
    "id": "a",
    "active": True,
    "gender": "male",
    "identifier": [{"system": "s", "value": "1"}, {"system": "t", "value": "2"}],
    "name": [{"family": "x", "given": ["a", "b"]}],
}


def test_each_operation_on_a_copy():
    result = patched(
        PATIENT,
        operation("replace", "Patient.active", valueBoolean=False),
        operation("add", "Patient", name="identifier", valueIdentifier={"system": "u", "value": "3"}),
        operation("add", "Patient", name="birthDate", valueDate="2000-01-01"),
        operation("add", "Patient", name="deceased", valueBoolean=False),  # a choice: stored as deceasedBoolean
        operation("add", "Patient", name="telecom", valueContactPoint={"system": "phone", "value": "1"}),
        operation("delete", "Patient.identifier.where(system='s')"),
        operation("delete", "Patient.gender"),
        operation("delete", "Patient.maritalStatus"),  # matches nothing: nothing to do
        operation("insert", "Patient.name.given", index=0, valueString="z"),
        operation("replace", "Patient.name.given[1]", valueString="A"),
        operation("move", "Patient.identifier", source=0, destination=1),
    )
    assert result == {
        "resourceType": "Patient",
        "id": "a",
        "active": False,
        "birthDate": "2000-01-01",
        "deceasedBoolean": False,
        "telecom": [{"system": "phone", "value": "1"}],
        "identifier": [{"system": "u", "value": "3"}, {"system": "t", "value": "2"}],
        "name": [{"family": "x", "given": ["z", "A", "b"]}],
    }
    assert PATIENT["active"] is True and len(PATIENT["identifier"]) == 2  # the original is untouched


def test_a_choice_element_is_addressed_by_its_name():
    observation = {"resourceType": "Observation", "id": "o", "status": "final", "valueString": "x"}
    assert patched(observation, operation("replace", "Observation.value", valueString="y"))["valueString"] == "y"


@pytest.mark.parametrize(
    ("operations", "message"),
    [
        ([operation("replace", "Patient.identifier", valueString="x")], "matches 2 elements, replace takes one"),
        ([operation("replace", "Patient.birthDate", valueDate="2000-01-01")], "matches 0 elements"),
        ([operation("add", "Patient", name="active", valueBoolean=False)], "active has a value already"),
        ([operation("insert", "Patient.identifier", index=5, valueIdentifier={})], "index 5 is past the end"),
        ([operation("replace", "Patient.id", valueId="b")], "may not change the resource's type or id"),
    ],
)
def test_a_patch_a_resource_cannot_take_fails(operations, message):
    with pytest.raises(PatchFailed, match=message):
        patched(PATIENT, *operations)


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"resourceType": "Patient"}, "a FHIRPath Patch is a Parameters resource"),
        ({"resourceType": "Parameters", "parameter": []}, "the patch has no operation"),
        ({"resourceType": "Parameters", "parameter": [operation("upsert", "Patient")]}, "type must be one of"),
        ({"resourceType": "Parameters", "parameter": [operation("add", "Patient", name="active")]}, "needs value"),
        (
            {"resourceType": "Parameters", "parameter": [operation("delete", "Patient.name.exists()")]},
            "is not Type.name",
        ),
        (
            {
                "resourceType": "Parameters",
                "parameter": [operation("insert", "Patient.name", index=-1, valueString="x")],
            },
            "integers ≥ 0",
        ),
    ],
)
def test_a_malformed_patch_is_refused_listing_why(parameters, message):
    with pytest.raises(InvalidRequest, match=message):
        parse_patch(parameters)
