"""What an export contains: per level, per parameter, latest versions only, deleted ones left out."""

import gzip
from datetime import datetime, timedelta, timezone

import pytest

from fhirjobs.bulkexport.steps import SUBSETTED
from fhirstore.models import Resource
from tests.fhirjobs.bulkexport.helpers import observation
from tests.fhirjobs.helpers import patient
from tests.fhirstore.helpers import delete, store

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def two_patients():
    """p1 with observations o1 (laboratory) and o2 (vital-signs), p2 with o3 (laboratory), and an Organization."""
    store(patient("p1"), patient("p2"), {"resourceType": "Organization", "id": "org1", "name": "Acme"})
    store(observation("o1", "p1"), observation("o2", "p1", "vital-signs"), observation("o3", "p2"))


def test_a_system_export_lists_every_resource_once_by_type_with_counts(exporter, two_patients):
    manifest = exporter.export("/fhir/$export")

    assert exporter.ids(manifest) == {
        "Observation": ["o1", "o2", "o3"],
        "Organization": ["org1"],
        "Patient": ["p1", "p2"],
    }
    assert [(output["type"], output["count"]) for output in manifest["output"]] == [
        ("Observation", 3),
        ("Organization", 1),
        ("Patient", 2),
    ]
    assert manifest["requiresAccessToken"] is True
    assert manifest["request"] == "http://testserver/fhir/$export"
    assert manifest["deleted"] == [] and manifest["error"] == []
    assert datetime.fromisoformat(manifest["transactionTime"]) <= datetime.now(timezone.utc)


def test_files_hold_latest_versions_and_leave_deleted_resources_out(exporter, two_patients):
    store(patient("p1", gender="female"))
    delete("Observation", "o2")

    downloaded = exporter.download(exporter.export("/fhir/$export?_type=Patient,Observation"))

    assert [resource["id"] for resource in downloaded["Observation"]] == ["o1", "o3"]
    p1 = next(resource for resource in downloaded["Patient"] if resource["id"] == "p1")
    assert p1["gender"] == "female" and p1["meta"]["versionId"] == "2"


def test_a_client_that_accepts_gzip_downloads_the_same_lines_compressed(exporter, two_patients):
    manifest = exporter.export("/fhir/$export?_type=Observation")
    url = manifest["output"][0]["url"]
    plain = b"".join(exporter.fhir.get(url).streaming_content)

    response = exporter.fhir.get(url, HTTP_ACCEPT_ENCODING="gzip, deflate")

    assert response["Content-Encoding"] == "gzip" and "Accept-Encoding" in response["Vary"]
    assert gzip.decompress(b"".join(response.streaming_content)) == plain
    assert len(plain.splitlines()) == 3


def test_files_are_split_every_chunk_size_resources(exporter, settings):
    settings.BULK_EXPORT_CHUNK_SIZE = 2
    store(*(patient(f"p{n}") for n in range(5)))

    manifest = exporter.export("/fhir/$export?_type=Patient")

    assert [output["count"] for output in manifest["output"]] == [2, 2, 1]
    assert exporter.ids(manifest) == {"Patient": ["p0", "p1", "p2", "p3", "p4"]}


def test_a_whole_store_export_has_one_file_per_type_of_each_row_range_every_body_exactly_as_stored(exporter, settings):
    settings.BULK_EXPORT_CHUNK_SIZE = 4
    awkward = 'quote " backslash \\ newline \n tab \t control \u0001 accents é 漢字 \\u0041'
    store(
        *(
            resource
            for n in range(3)
            for resource in (
                patient(f"p{n}", text={"status": "generated", "div": awkward}),
                observation(f"o{n}", f"p{n}"),
            )
        )
    )
    stored = {(row.resource_type, row.logical_id): row.body for row in Resource.objects.all()}

    manifest = exporter.export("/fhir/$export")

    assert sorted((output["type"], output["count"]) for output in manifest["output"]) == [
        ("Observation", 1),
        ("Observation", 2),
        ("Patient", 1),
        ("Patient", 2),
    ]  # rows 1-4 and 5-6
    downloaded = exporter.download(manifest)
    assert {
        (resource["resourceType"], resource["id"]): resource
        for resources in downloaded.values()
        for resource in resources
    } == stored


def test_a_type_that_is_a_minority_of_the_store_is_paged_by_its_own_ids(exporter, settings):
    settings.BULK_EXPORT_CHUNK_SIZE = 2
    store(
        *(
            resource
            for n in range(5)
            for resource in (patient(f"p{n}"), *(observation(f"o{n}-{k}", f"p{n}") for k in range(3)))
        )
    )

    manifest = exporter.export("/fhir/$export?_type=Patient")

    assert [output["count"] for output in manifest["output"]] == [2, 2, 1]


def test_type_limits_the_export_to_those_types(exporter, two_patients):
    manifest = exporter.export("/fhir/$export?_type=Organization&_type=Patient")

    assert set(exporter.ids(manifest)) == {"Organization", "Patient"}


def test_an_export_that_matches_nothing_has_an_empty_output(exporter, two_patients):
    manifest = exporter.export("/fhir/$export?_type=Condition")

    assert manifest["output"] == []


def test_a_patient_export_takes_every_patient_compartment_and_no_other_resources(exporter, two_patients):
    store(
        observation("o4", "ghost-patient-never-stored"),
        {"resourceType": "Observation", "id": "o5", "status": "final", "code": {"text": "no subject"}},
    )

    manifest = exporter.export("/fhir/Patient/$export")

    assert exporter.ids(manifest) == {"Observation": ["o1", "o2", "o3", "o4"], "Patient": ["p1", "p2"]}


def test_a_patient_export_with_a_patient_list_takes_only_their_compartments(exporter, two_patients):
    response = exporter.kick_off_post(
        "/fhir/Patient/$export",
        [
            {"name": "patient", "valueReference": {"reference": "Patient/p2"}},
            {"name": "_type", "valueString": "Patient,Observation"},
        ],
    )

    manifest = exporter.finish(response["Content-Location"])

    assert exporter.ids(manifest) == {"Observation": ["o3"], "Patient": ["p2"]}


def test_a_group_export_takes_its_members_compartments(exporter, two_patients):
    store(
        {
            "resourceType": "Group",
            "id": "g1",
            "type": "person",
            "actual": True,
            "member": [{"entity": {"reference": "Patient/p1"}}],
        }
    )

    manifest = exporter.export("/fhir/Group/g1/$export")

    assert exporter.ids(manifest) == {"Group": ["g1"], "Observation": ["o1", "o2"], "Patient": ["p1"]}


def test_a_group_without_members_exports_nothing(exporter, two_patients):
    store({"resourceType": "Group", "id": "empty", "type": "person", "actual": True})

    assert exporter.export("/fhir/Group/empty/$export")["output"] == []


def test_since_includes_resources_changed_at_or_after_it(exporter):
    moment = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)
    store(patient("before"), at=moment - timedelta(microseconds=1))
    store(patient("at"), at=moment)
    store(patient("after"), at=moment + timedelta(microseconds=1))

    manifest = exporter.export("/fhir/$export?_type=Patient&_since=2024-05-01T12:00:00Z")

    assert exporter.ids(manifest) == {"Patient": ["after", "at"]}


def test_since_with_an_offset_compares_the_same_instant(exporter):
    store(patient("early"), at=datetime(2024, 5, 1, 9, 59, tzinfo=timezone.utc))
    store(patient("late"), at=datetime(2024, 5, 1, 10, 0, tzinfo=timezone.utc))

    manifest = exporter.export("/fhir/$export?_type=Patient&_since=2024-05-01T12:00:00%2B02:00")

    assert exporter.ids(manifest) == {"Patient": ["late"]}


def test_type_filter_uses_the_indexed_search_parameters(exporter, two_patients):
    manifest = exporter.export(
        "/fhir/$export?_type=Observation,Patient&_typeFilter=Observation%3Fcategory%3Dvital-signs"
    )

    assert exporter.ids(manifest) == {"Observation": ["o2"], "Patient": ["p1", "p2"]}


def test_type_filters_of_one_type_are_ored_and_comma_values_too(exporter, two_patients):
    store(observation("o9", "p2", "survey"))

    either = exporter.export(
        "/fhir/$export?_type=Observation&_typeFilter=Observation%3Fcategory%3Dsurvey,Observation%3Fsubject%3DPatient/p1"
    )
    listed = exporter.export(
        "/fhir/$export?_type=Observation&_typeFilter=Observation%3Fcategory%3Dsurvey%252Cvital-signs"
    )

    assert exporter.ids(either) == {"Observation": ["o1", "o2", "o9"]}
    assert exporter.ids(listed) == {"Observation": ["o2", "o9"]}


def test_type_filter_narrows_a_patient_export_too(exporter, two_patients):
    manifest = exporter.export(
        "/fhir/Patient/$export?_type=Observation&_typeFilter=Observation%3Fcategory%3Dlaboratory"
    )

    assert exporter.ids(manifest) == {"Observation": ["o1", "o3"]}


def test_elements_keeps_those_top_level_elements_and_marks_the_resources_subsetted(exporter, two_patients):
    downloaded = exporter.download(
        exporter.export("/fhir/$export?_type=Observation,Patient&_elements=Observation.status,name")
    )

    observation_keys = {key for resource in downloaded["Observation"] for key in resource}
    assert observation_keys == {"resourceType", "id", "meta", "status", "name"} - {"name"}
    assert all(SUBSETTED in resource["meta"]["tag"] for resource in downloaded["Observation"])
    assert all(set(resource) == {"resourceType", "id", "meta", "name"} for resource in downloaded["Patient"])


def test_output_format_accepts_the_ndjson_names(exporter, two_patients):
    for output_format in ("application/fhir%2Bndjson", "application/ndjson", "ndjson"):
        response = exporter.kick_off(f"/fhir/$export?_type=Patient&_outputFormat={output_format}")
        assert response.status_code == 202, response.content


def test_filtered_walks_are_split_every_chunk_size_resources_too(exporter, two_patients, settings):
    settings.BULK_EXPORT_CHUNK_SIZE = 1

    filtered = exporter.export("/fhir/$export?_type=Observation&_typeFilter=Observation%3Fcategory%3Dlaboratory")
    compartments = exporter.export("/fhir/Patient/$export?_type=Observation")

    assert [output["count"] for output in filtered["output"]] == [1, 1]
    assert exporter.ids(filtered) == {"Observation": ["o1", "o3"]}
    assert exporter.ids(compartments) == {"Observation": ["o1", "o2", "o3"]}
