"""`_until` (Bulk Data STU3): the export reads the store as it was at `_until` (when that is before transactionTime),
at every level, and with `_since` exports a window; a malformed `_until`, or one before `_since`, is a 400."""

import json
from datetime import datetime, timedelta, timezone

import pytest

from batch.models import JobInstance
from fhirjobs.bulkexport.models import BulkExport
from tests.fhirjobs.bulkexport.helpers import observation
from tests.fhirjobs.helpers import patient
from tests.fhirstore.helpers import assert_outcome, delete, store

pytestmark = pytest.mark.django_db(transaction=True)

UNTIL = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)
UNTIL_TEXT = "2024-05-01T12:00:00.000000Z"
EARLY = UNTIL - timedelta(days=30)


@pytest.mark.parametrize(
    "query, text",
    [
        ("_until=yesterday", "_until 'yesterday' is not a FHIR instant"),
        ("_until=2024-13-01", "_until '2024-13-01' is not a FHIR instant"),
        ("_until=2024-01-01&_until=2024-02-01", "_until may be given once"),
        (
            "_since=2024-05-02T00:00:00Z&_until=2024-05-01T23:59:59Z",
            "_until (2024-05-01T23:59:59.999999+00:00) is before _since (2024-05-02T00:00:00+00:00)",
        ),
    ],
)
@pytest.mark.parametrize("path", ["/fhir/$export", "/fhir/Patient/$export", "/fhir/Group/g1/$export"])
def test_a_bad_until_is_refused_with_400_at_every_level_even_lenient(exporter, path, query, text):
    store({"resourceType": "Group", "id": "g1", "type": "person", "actual": True})
    assert_outcome(exporter.kick_off(f"{path}?{query}"), 400, text)
    assert_outcome(exporter.kick_off(f"{path}?{query}", prefer="respond-async, handling=lenient"), 400, text)
    assert not BulkExport.objects.exists() and not JobInstance.objects.exists()


def test_until_equal_to_since_is_a_window_of_one_instant(exporter):
    store(patient("at"), at=UNTIL)
    store(patient("after"), at=UNTIL + timedelta(microseconds=1))

    manifest = exporter.export(f"/fhir/$export?_type=Patient&_since={UNTIL_TEXT}&_until={UNTIL_TEXT}")

    assert exporter.ids(manifest) == {"Patient": ["at"]}


def test_a_post_kick_off_takes_until_as_a_value_instant_and_a_date_as_its_last_instant(exporter):
    response = exporter.kick_off_post("/fhir/$export", [{"name": "_until", "valueInstant": "2024-05-01"}])

    assert response.status_code == 202, response.content
    assert JobInstance.objects.get().parameters["until"] == "2024-05-01T23:59:59.999999+00:00"


def test_exports_differing_only_in_until_are_not_taken_for_the_same_one(exporter):
    first = exporter.kick_off("/fhir/$export?_type=Patient&_until=2024-01-01T00:00:00Z")
    second = exporter.kick_off("/fhir/$export?_type=Patient&_until=2024-02-01T00:00:00Z")

    assert first["Content-Location"] != second["Content-Location"]


@pytest.mark.parametrize("types", ["", "_type=Patient&"])  # the whole-store row-range walk, and the per-type walk
def test_until_includes_resources_changed_at_or_before_it(exporter, types):
    store(patient("before"), at=UNTIL - timedelta(microseconds=1))
    store(patient("at"), at=UNTIL)
    store(patient("after"), at=UNTIL + timedelta(microseconds=1))

    manifest = exporter.export(f"/fhir/$export?{types}_until={UNTIL_TEXT}")

    assert exporter.ids(manifest) == {"Patient": ["at", "before"]}
    assert datetime.fromisoformat(manifest["transactionTime"]) > UNTIL  # transactionTime stays the kick-off's


def test_an_until_with_seconds_precision_includes_the_whole_second(exporter):
    store(patient("in-the-second"), at=UNTIL + timedelta(microseconds=999_999))
    store(patient("next-second"), at=UNTIL + timedelta(seconds=1))

    manifest = exporter.export("/fhir/$export?_type=Patient&_until=2024-05-01T12:00:00Z")

    assert exporter.ids(manifest) == {"Patient": ["in-the-second"]}


def test_since_and_until_export_the_window(exporter):
    store(patient("too-early"), at=EARLY - timedelta(microseconds=1))
    store(patient("first"), at=EARLY)
    store(patient("last"), at=UNTIL)
    store(patient("too-late"), at=UNTIL + timedelta(microseconds=1))

    manifest = exporter.export(f"/fhir/$export?_type=Patient&_since=2024-04-01T12:00:00Z&_until={UNTIL_TEXT}")

    assert exporter.ids(manifest) == {"Patient": ["first", "last"]}


@pytest.mark.parametrize("types", ["", "_type=Patient&"])
def test_a_resource_changed_after_until_is_exported_as_it_was_then(exporter, types):
    """The version current at `_until`, not the newer one (nor nothing): the export is the store as of `_until`.
    One created after `_until` is left out; one deleted after it is still exported, and not listed as deleted."""
    store(patient("changed", gender="male"), patient("deleted-later"), at=EARLY)
    store(patient("changed", gender="female"), at=UNTIL + timedelta(days=1))
    store(patient("created-later"), at=UNTIL + timedelta(days=1))
    delete("Patient", "deleted-later")  # now, long after `_until`

    for query in (f"_until={UNTIL_TEXT}", f"_since=2024-01-01T00:00:00Z&_until={UNTIL_TEXT}"):
        manifest = exporter.export(f"/fhir/$export?{types}{query}")

        downloaded = exporter.download(manifest)
        assert {resource["id"]: resource.get("gender") for resource in downloaded["Patient"]} == {
            "changed": "male",
            "deleted-later": None,
        }
        assert {resource["id"]: resource["meta"]["versionId"] for resource in downloaded["Patient"]} == {
            "changed": "1",
            "deleted-later": "1",
        }
        assert manifest["deleted"] == []


def test_a_since_until_window_lists_what_was_deleted_in_it(exporter):
    """A deletion inside the window is under `deleted`; with `_until` before it, the resource is exported instead."""
    store(patient("gone"), at=EARLY)
    delete("Patient", "gone")
    deleted_at = datetime.now(timezone.utc)
    before_the_deletion = EARLY.isoformat().replace("+", "%2B")

    windowed = exporter.export(
        f"/fhir/$export?_type=Patient&_since={before_the_deletion}"
        f"&_until={(deleted_at + timedelta(days=1)).isoformat().replace('+', '%2B')}"
    )
    assert [file["type"] for file in windowed["deleted"]] == ["Bundle"] and windowed["output"] == []

    earlier = exporter.export(f"/fhir/$export?_type=Patient&_since={before_the_deletion}&_until={UNTIL_TEXT}")
    assert earlier["deleted"] == [] and exporter.ids(earlier) == {"Patient": ["gone"]}


def store_members_at_until() -> None:
    """A Group of p1 and p2, and their Observations: changed, created and deleted after `_until`."""
    store(patient("p1"), patient("p2"), at=EARLY)
    store(
        {
            "resourceType": "Group",
            "id": "g1",
            "type": "person",
            "actual": True,
            "member": [{"entity": {"reference": "Patient/p1"}}, {"entity": {"reference": "Patient/p2"}}],
        },
        at=EARLY,
    )
    store(observation("o-before", "p1"), observation("o-changed", "p2"), observation("o-deleted", "p1"), at=UNTIL)
    store(observation("o-changed", "p2", "vital-signs"), observation("o-after", "p1"), at=UNTIL + timedelta(seconds=1))
    delete("Observation", "o-deleted")  # now: its index rows are gone, its version of `_until` is not


def test_patient_and_group_exports_read_the_compartments_as_they_were_at_until(exporter):
    """A resource deleted after `_until` was in its patient's compartment then: exported, as at system level."""
    store_members_at_until()

    for path in ("/fhir/Patient/$export", "/fhir/Group/g1/$export"):
        manifest = exporter.export(f"{path}?_type=Patient,Observation&_until={UNTIL_TEXT}")

        downloaded = exporter.download(manifest)
        assert sorted(resource["id"] for resource in downloaded["Patient"]) == ["p1", "p2"], path
        assert {
            resource["id"]: resource["category"][0]["coding"][0]["code"] for resource in downloaded["Observation"]
        } == {"o-before": "laboratory", "o-changed": "laboratory", "o-deleted": "laboratory"}, path
        assert manifest["deleted"] == []
    post = exporter.kick_off_post(
        "/fhir/Patient/$export",
        [
            {"name": "patient", "valueReference": {"reference": "Patient/p1"}},
            {"name": "_type", "valueString": "Observation"},
            {"name": "_until", "valueInstant": UNTIL_TEXT},
        ],
    )
    assert post.status_code == 202, post.content
    assert exporter.ids(exporter.finish(post["Content-Location"])) == {"Observation": ["o-before", "o-deleted"]}


def test_blocks_organized_by_patient_hold_the_compartments_as_they_were_at_until(exporter):
    store_members_at_until()

    for path in ("/fhir/$export", "/fhir/Patient/$export", "/fhir/Group/g1/$export"):
        manifest = exporter.export(f"{path}?organizeOutputBy=Patient&_type=Patient,Observation&_until={UNTIL_TEXT}")

        [file] = manifest["output"]
        lines = [json.loads(line) for line in b"".join(exporter.fhir.get(file["url"]).streaming_content).splitlines()]
        assert [f"{line['resourceType']}/{line['id']}" for line in lines if line["resourceType"] != "Parameters"] == [
            "Patient/p1",
            "Observation/o-before",
            "Observation/o-deleted",
            "Patient/p2",
            "Observation/o-changed",
        ], path


def test_a_member_deleted_after_until_is_exported_once_with_its_compartment(exporter):
    """A Group member's Patient and its Observation, both deleted after `_until`: the Group's compartments then."""
    store(patient("p1"), observation("o1", "p1"), at=EARLY)
    store(
        {
            "resourceType": "Group",
            "id": "g1",
            "type": "person",
            "actual": True,
            "member": [{"entity": {"reference": "Patient/p1"}}],
        },
        at=EARLY,
    )
    delete("Observation", "o1")
    delete("Patient", "p1")

    manifest = exporter.export(f"/fhir/Group/g1/$export?_type=Patient,Observation&_until={UNTIL_TEXT}")

    assert exporter.ids(manifest) == {"Patient": ["p1"], "Observation": ["o1"]}


def test_with_since_a_resource_deleted_after_until_is_exported_when_its_version_of_until_is_in_the_window(exporter):
    store(patient("p1"), observation("o-early", "p1"), at=EARLY - timedelta(days=1))
    store(observation("o-in-window", "p1"), at=UNTIL)
    delete("Observation", "o-early")
    delete("Observation", "o-in-window")
    window = f"_since={EARLY.isoformat().replace('+', '%2B')}&_until={UNTIL_TEXT}"

    for path in ("/fhir/Patient/$export", "/fhir/$export"):
        manifest = exporter.export(f"{path}?_type=Observation&{window}")

        assert exporter.ids(manifest) == {"Observation": ["o-in-window"]}, path
        assert manifest["deleted"] == [], path


@pytest.mark.parametrize("query", ["", "&organizeOutputBy=Patient"], ids=["by type", "organized by Patient"])
def test_a_group_export_takes_the_members_the_group_had_at_until(exporter, query):
    store(patient("p1"), patient("p2"), observation("o1", "p1"), observation("o2", "p2"), at=EARLY)
    group = {"resourceType": "Group", "id": "g1", "type": "person", "actual": True}
    store({**group, "member": [{"entity": {"reference": "Patient/p1"}}]}, at=EARLY)
    store({**group, "member": [{"entity": {"reference": "Patient/p2"}}]}, at=UNTIL + timedelta(seconds=1))

    manifest = exporter.export(f"/fhir/Group/g1/$export?_type=Patient,Observation&_until={UNTIL_TEXT}{query}")

    assert sorted(
        f"{resource['resourceType']}/{resource['id']}"
        for file in manifest["output"]
        for line in b"".join(exporter.fhir.get(file["url"]).streaming_content).splitlines()
        if (resource := json.loads(line))["resourceType"] != "Parameters"
    ) == ["Observation/o1", "Patient/p1"]
