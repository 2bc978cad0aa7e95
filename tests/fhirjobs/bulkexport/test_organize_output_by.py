"""`organizeOutputBy=Patient` (Bulk Data STU3): files of Patient blocks, each a header `Parameters` naming the
Patient, then the Patient, then the resources of its compartment; the manifest says `outputOrganizedBy` and
its entries carry no `type`. Other values are refused (400; lenient: ignored with a warning)."""

import json
from urllib.parse import quote

import pytest

from batch.models import JobInstance
from tests.fhirjobs.bulkexport.helpers import observation
from tests.fhirjobs.helpers import patient
from tests.fhirstore.helpers import assert_outcome, delete, store

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def resources():
    store(patient("p1"), patient("p2"), patient("p3"))
    store(observation("o1", "p1"), observation("o2", "p2"), observation("o3", "p1", category="vital-signs"))
    store({"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p1"}})
    store({"resourceType": "Practitioner", "id": "dr"})  # in no Patient compartment


def header(patient_id: str) -> dict:
    return {
        "resourceType": "Parameters",
        "parameter": [{"name": "header", "valueReference": {"reference": f"Patient/{patient_id}"}}],
    }


def blocks(exporter, manifest: dict) -> list[list[dict]]:
    """Every file's blocks, in file order: each a list of resources that starts with its header."""
    files = []
    for entry in manifest["output"]:
        response = exporter.fhir.get(entry["url"])
        assert response.status_code == 200, response.content
        lines = [json.loads(line) for line in b"".join(response.streaming_content).decode().splitlines()]
        assert len([line for line in lines if line["resourceType"] != "Parameters"]) == entry["count"]
        assert lines[0]["resourceType"] == "Parameters"  # a file starts a block: blocks are never split
        for line in lines:
            if line["resourceType"] == "Parameters":
                files.append([])
            files[-1].append(line)
    return files


def names(block: list[dict]) -> list[str]:
    return [f"{resource['resourceType']}/{resource['id']}" for resource in block[1:]]


def test_each_patient_block_is_a_header_then_the_patient_then_its_compartment(exporter):
    manifest = exporter.export("/fhir/$export?organizeOutputBy=Patient")

    assert manifest["outputOrganizedBy"] == "Patient"
    assert all(set(entry) == {"url", "count"} for entry in manifest["output"])  # no `type`: files hold many
    exported = sorted(
        blocks(exporter, manifest), key=lambda block: block[0]["parameter"][0]["valueReference"]["reference"]
    )
    assert [block[0] for block in exported] == [header("p1"), header("p2"), header("p3")]
    assert [names(block) for block in exported] == [
        ["Patient/p1", "Condition/c1", "Observation/o1", "Observation/o3"],
        ["Patient/p2", "Observation/o2"],
        ["Patient/p3"],
    ]  # the Practitioner is in no block: the IG lets a server leave out what references no Patient


def test_a_file_holds_patients_per_file_blocks(exporter, settings):
    settings.BULK_EXPORT_PATIENTS_PER_FILE = 2
    manifest = exporter.export("/fhir/$export?organizeOutputBy=Patient&_type=Patient,Observation")

    assert [entry["count"] for entry in manifest["output"]] == [3 + 2, 1]  # resources: headers are not counted
    assert JobInstance.objects.get().parameters["patients_per_file"] == 2
    assert JobInstance.objects.get().definition_version == 4


def test_count_is_the_resources_of_a_file_not_its_header_lines_as_smart_bulk_data_client_checks(exporter):
    """SMART's bulk-data-client (1.2.1) refuses a file of blocks whose `count` is not its lines less its
    `Parameters` headers ("Expected 7230 resources but found 7214"), as the reference server writes it."""
    manifest = exporter.export("/fhir/$export?organizeOutputBy=Patient")

    [entry] = manifest["output"]
    response = exporter.fhir.get(entry["url"])
    lines = [json.loads(line) for line in b"".join(response.streaming_content).decode().splitlines()]
    headers = [line for line in lines if line["resourceType"] == "Parameters"]
    assert (len(lines), len(headers)) == (10, 3)
    assert entry["count"] == len(lines) - len(headers) == 7


def test_a_resource_in_two_compartments_is_in_both_blocks(exporter):
    store(observation("shared", "p1", performer=[{"reference": "Patient/p2"}]))

    exported = blocks(exporter, exporter.export("/fhir/$export?organizeOutputBy=Patient&_type=Observation"))

    assert [names(block) for block in exported] == [
        ["Observation/o1", "Observation/o3", "Observation/shared"],
        ["Observation/o2", "Observation/shared"],
    ]


def test_filters_narrow_the_blocks_and_a_patient_with_nothing_left_has_none(exporter):
    manifest = exporter.export(
        "/fhir/Patient/$export?organizeOutputBy=Patient&_type=Observation"
        "&_typeFilter=Observation%3Fcategory%3Dvital-signs&_elements=status"
    )

    [block] = blocks(exporter, manifest)
    assert names(block) == ["Observation/o3"]
    assert set(block[1]) == {"resourceType", "id", "meta", "status"}


def test_group_and_patient_list_exports_write_the_blocks_of_their_patients(exporter):
    store(
        {
            "resourceType": "Group",
            "id": "g",
            "type": "person",
            "actual": True,
            "member": [{"entity": {"reference": "Patient/p2"}}],
        }
    )

    by_group = blocks(exporter, exporter.export("/fhir/Group/g/$export?organizeOutputBy=Patient"))
    listed = exporter.kick_off_post(
        "/fhir/Patient/$export",
        [
            {"name": "organizeOutputBy", "valueString": "Patient"},
            {"name": "patient", "valueReference": {"reference": "Patient/p1"}},
        ],
    )
    by_list = blocks(exporter, exporter.finish(listed["Content-Location"]))

    assert [names(block)[:2] for block in by_group] == [["Patient/p2", "Group/g"]]
    assert [names(block) for block in by_list] == [["Patient/p1", "Condition/c1", "Observation/o1", "Observation/o3"]]


def test_with_since_deletions_are_listed_as_bundles_beside_the_blocks(exporter):
    first = exporter.export("/fhir/$export?organizeOutputBy=Patient&_type=Observation")
    delete("Observation", "o2")
    store(observation("o4", "p3"))

    manifest = exporter.export(
        f"/fhir/$export?organizeOutputBy=Patient&_type=Observation&_since={quote(first['transactionTime'])}"
    )

    assert [names(block) for block in blocks(exporter, manifest)] == [["Observation/o4"]]
    assert [entry["type"] for entry in manifest["deleted"]] == ["Bundle"]


@pytest.mark.parametrize(
    "query, text",
    [
        ("organizeOutputBy=Group", "organizeOutputBy 'Group' is not supported"),
        ("organizeOutputBy=Patient&_type=Practitioner", "an export organized by Patient has no block to put it in"),
    ],
)
def test_what_cannot_be_organized_by_patient_is_refused_unless_lenient(exporter, query, text):
    assert_outcome(exporter.kick_off(f"/fhir/$export?{query}"), 400, text)

    response = exporter.kick_off(f"/fhir/$export?{query}", prefer="respond-async, handling=lenient")

    assert response.status_code == 202
    assert text in json.dumps(response.json())


def test_organize_output_by_may_be_given_once(exporter):
    assert_outcome(
        exporter.kick_off("/fhir/$export?organizeOutputBy=Patient&organizeOutputBy=Group"),
        400,
        "organizeOutputBy may be given once",
    )


def test_a_partial_manifest_of_blocks_says_how_it_is_organized(exporter):
    status_url = exporter.kick_off("/fhir/$export?organizeOutputBy=Patient&allowPartialManifests=true")[
        "Content-Location"
    ]
    exporter.bus.drain()

    manifest = exporter.fhir.get(status_url).json()

    assert manifest["outputOrganizedBy"] == "Patient"
    assert all(set(entry) == {"url", "count"} for entry in manifest["output"])
    assert len(blocks(exporter, manifest)) == 3
