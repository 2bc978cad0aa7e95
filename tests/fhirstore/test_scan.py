"""The bulk-read functions the $export job builds on: keyset id pages, compartments, bodies, type filters."""

import json
from datetime import datetime, timedelta, timezone

import pytest
from django.db import transaction

from fhirstore.authority import SERVER
from fhirstore.exceptions import InvalidRequest, ResourceNotFound
from fhirstore.models import Resource
from fhirstore.scan import (
    bodies_json_by_id,
    bodies_json_by_row_id,
    compartment_ids_page,
    compartment_members,
    current_bodies,
    current_bodies_json,
    group_patient_ids,
    group_patient_ids_at,
    iter_resource_id_pages,
    missing_ids,
    resource_ids_page,
)
from fhirstore.search import search_filter, type_filter
from fhirstore.storage import delete_resource
from tests.fhirstore.helpers import delete, patient, store

pytestmark = pytest.mark.django_db

T0 = datetime(2024, 3, 1, tzinfo=timezone.utc)


def observation(observation_id: str, subject: str, category: str = "vital-signs", status: str = "final") -> dict:
    return {
        "resourceType": "Observation",
        "id": observation_id,
        "status": status,
        "category": [{"coding": [{"code": category}]}],
        "code": {"coding": [{"code": "x"}]},
        "subject": {"reference": subject},
    }


def test_id_pages_walk_a_type_in_id_order_by_keyset():
    store(*[patient(id=f"p{n:02d}") for n in range(7)], observation("o1", "Patient/p00"))

    pages = list(iter_resource_id_pages("Patient", page_size=3))

    assert pages == [["p00", "p01", "p02"], ["p03", "p04", "p05"], ["p06"]]
    assert resource_ids_page("Patient", after="p04", limit=10) == ["p05", "p06"]


def test_id_pages_leave_out_deleted_resources():
    store(patient(id="a"), patient(id="b"))
    with transaction.atomic():
        delete_resource("Patient", "a", authority=SERVER)

    assert resource_ids_page("Patient") == ["b"]


def test_since_keeps_resources_changed_at_or_after_it():
    store(patient(id="old"), at=T0)
    store(patient(id="boundary"), at=T0 + timedelta(hours=1))
    store(patient(id="new"), at=T0 + timedelta(hours=2))

    assert resource_ids_page("Patient", since=T0 + timedelta(hours=1)) == ["boundary", "new"]


def test_type_filters_reuse_search_and_any_of_them_may_match():
    store(
        observation("lab-final", "Patient/p", "laboratory"),
        observation("lab-prelim", "Patient/p", "laboratory", "preliminary"),
        observation("vital", "Patient/p"),
        observation("survey", "Patient/p", "survey"),
    )
    resource_type, labs = type_filter("Observation?category=laboratory&status=final")

    assert resource_type == "Observation"
    assert resource_ids_page("Observation", filters=[labs]) == ["lab-final"]
    assert resource_ids_page("Observation", filters=[labs, search_filter("Observation", "category=survey")]) == [
        "lab-final",
        "survey",
    ]


@pytest.mark.parametrize(
    "expression", ["Observation", "Spaceship?x=1", "Observation?nonsense=1", "Observation?category=laboratory&_count=5"]
)
def test_bad_type_filters_are_refused(expression):
    with pytest.raises(InvalidRequest):
        type_filter(expression)


def test_compartments_hold_what_points_at_the_patients_through_compartment_parameters():
    store(
        patient(id="p1"),
        patient(id="p2"),
        patient(id="p3", link=[{"other": {"reference": "Patient/p1"}, "type": "seealso"}]),
        observation("o1", "Patient/p1"),
        observation("o2", "Patient/p2"),
        observation("o3", "Patient/p3"),
        {**observation("performed-by-p2", "Patient/p3"), "performer": [{"reference": "Patient/p2"}]},
        observation("group-obs", "Group/p1"),
        {"resourceType": "Encounter", "id": "e1", "status": "finished", "subject": {"reference": "Patient/p1"}},
        {"resourceType": "Organization", "id": "org", "name": "Not in any compartment"},
    )

    assert compartment_ids_page("Observation", ["p1", "p2"]) == ["o1", "o2", "performed-by-p2"]
    assert compartment_ids_page("Encounter", ["p1"]) == ["e1"]
    assert compartment_ids_page("Patient", ["p1"]) == ["p1", "p3"]  # itself, and who links to it
    assert compartment_ids_page("Organization", ["p1"]) == []


def test_bodies_load_in_id_order_without_deleted_ones():
    store(patient(id="b"), patient(id="a"), patient(id="gone"))
    with transaction.atomic():
        delete_resource("Patient", "gone", authority=SERVER)

    assert [body["id"] for body in current_bodies("Patient", ["b", "gone", "a", "unknown"])] == ["a", "b"]
    lines = current_bodies_json("Patient", ["b", "a"])
    assert [json.loads(line)["id"] for line in lines] == ["a", "b"]
    assert all("\n" not in line for line in lines)
    assert json.loads(lines[0])["meta"]["versionId"] == "1"


def test_compartment_members_are_by_type_and_patient_once_per_compartment_with_filters_applied():
    store(
        patient(id="p1"),
        patient(id="p2"),
        patient(id="p3"),
        observation("o1", "Patient/p1"),
        observation("lab", "Patient/p1", category="laboratory"),
        {**observation("shared", "Patient/p1"), "performer": [{"reference": "Patient/p2"}]},
        {"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p2"}},
        observation("elsewhere", "Patient/p3"),
    )
    vital_signs = type_filter("Observation?category=vital-signs")[1]

    members = compartment_members(["p1", "p2"], {"Patient": [], "Observation": [vital_signs], "Condition": []})

    pairs = {resource_type: [member[:2] for member in found] for resource_type, found in members.items()}
    assert pairs == {"Condition": [("p2", "c1")], "Observation": [("p1", "o1"), ("p1", "shared"), ("p2", "shared")]}
    bodies = bodies_json_by_row_id(member.row_id for member in members["Observation"])
    assert sorted(json.loads(body)["id"] for body in bodies.values()) == ["o1", "shared"]
    assert [logical_id for logical_id, _ in bodies_json_by_id("Observation", ["shared", "o1", "nope"])] == [
        "o1",
        "shared",
    ]


def test_missing_ids_and_group_members():
    store(
        patient(id="p1"),
        patient(id="p2"),
        {
            "resourceType": "Group",
            "id": "g",
            "type": "person",
            "actual": True,
            "member": [
                {"entity": {"reference": "Patient/p2"}},
                {"entity": {"reference": "Patient/p1"}},
                {"entity": {"reference": "Practitioner/d"}},
            ],
        },
    )

    assert missing_ids("Patient", ["p1", "nobody"]) == ["nobody"]
    assert group_patient_ids("g") == ["p1", "p2"]
    with pytest.raises(ResourceNotFound):
        group_patient_ids("no-such-group")


def test_bodies_by_row_id_as_of_until_are_the_versions_of_then():
    then = datetime(2024, 5, 1, tzinfo=timezone.utc)
    store(observation("changed", "Patient/p1", status="preliminary"), observation("gone", "Patient/p1"), at=then)
    store(observation("changed", "Patient/p1", status="final"), observation("new", "Patient/p1"))
    delete("Observation", "gone")
    rows = dict(Resource.objects.filter(resource_type="Observation").values_list("logical_id", "pk"))

    as_of_then = bodies_json_by_row_id(rows.values(), until=then + timedelta(seconds=1))
    now = bodies_json_by_row_id(rows.values())

    assert {json.loads(body)["id"]: json.loads(body)["status"] for body in as_of_then.values()} == {
        "changed": "preliminary",
        "gone": "final",
    }
    assert {json.loads(body)["id"]: json.loads(body)["status"] for body in now.values()} == {
        "changed": "final",
        "new": "final",
    }
    assert set(now) == {rows["changed"], rows["new"]}, "keyed by row id"


def test_a_groups_members_as_of_until_are_those_of_its_version_of_then():
    then = datetime(2024, 5, 1, tzinfo=timezone.utc)

    def group(logical_id: str, *members: str) -> dict:
        entities = [{"entity": {"reference": f"Patient/{member}"}} for member in members]
        return {"resourceType": "Group", "id": logical_id, "type": "person", "actual": True, "member": entities}

    store(group("changed", "p1", "p2"), group("gone", "p3"), group("kept", "p4"), at=then)
    store(group("changed", "p2", "p5"), group("new", "p6"), at=then + timedelta(days=1))
    delete("Group", "gone")

    assert {
        logical_id: group_patient_ids_at(logical_id, then) for logical_id in ("changed", "gone", "kept", "new")
    } == {"changed": ["p1", "p2"], "gone": ["p3"], "kept": ["p4"], "new": []}
    assert group_patient_ids_at("changed", then + timedelta(days=2)) == ["p2", "p5"]
