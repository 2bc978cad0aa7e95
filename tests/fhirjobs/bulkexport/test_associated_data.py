"""`includeAssociatedData` (Bulk Data STU3): `RelevantProvenanceResources` adds every Provenance whose `target` is an
exported resource, `LatestProvenanceResources` only the latest of each; both given: the least restrictive. Other
values, custom ones (`_name`) included, are 400 (lenient: left out with a warning)."""

import json
from datetime import datetime, timedelta, timezone

import pytest

from batch.models import JobInstance
from tests.fhirjobs.bulkexport.helpers import observation
from tests.fhirjobs.helpers import patient
from tests.fhirstore.helpers import assert_outcome, store

pytestmark = pytest.mark.django_db(transaction=True)

EARLIER = datetime(2024, 1, 1, tzinfo=timezone.utc)
RELEVANT = "RelevantProvenanceResources"
LATEST = "LatestProvenanceResources"


def provenance(logical_id: str, *targets: str) -> dict:
    return {
        "resourceType": "Provenance",
        "id": logical_id,
        "recorded": "2024-01-01T00:00:00Z",
        "target": [{"reference": target} for target in targets],
        "agent": [{"who": {"reference": "Practitioner/dr"}}],
    }


@pytest.fixture(autouse=True)
def resources():
    store(patient("p1"), patient("p2"))
    store(observation("o1", "p1"), observation("o2", "p2"), observation("o3", "p1", category="vital-signs"))
    store(provenance("old-o1", "Observation/o1"), at=EARLIER)
    store(provenance("new-o1", "Observation/o1"), at=EARLIER + timedelta(days=1))
    store(provenance("o2-and-p2", "Observation/o2", "Patient/p2"))
    store(provenance("o3", "Observation/o3"))
    store(provenance("unrelated", "Practitioner/dr"))


def test_relevant_provenance_adds_every_provenance_of_the_exported_resources(exporter):
    manifest = exporter.export(f"/fhir/$export?_type=Observation&includeAssociatedData={RELEVANT}")

    assert exporter.ids(manifest) == {
        "Observation": ["o1", "o2", "o3"],
        "Provenance": ["new-o1", "o2-and-p2", "o3", "old-o1"],
    }
    assert JobInstance.objects.get().parameters["associated_data"] == RELEVANT


def test_latest_provenance_adds_the_last_changed_provenance_of_each_exported_resource(exporter):
    manifest = exporter.export(f"/fhir/$export?_type=Observation&includeAssociatedData={LATEST}")

    assert exporter.ids(manifest)["Provenance"] == ["new-o1", "o2-and-p2", "o3"]


def test_both_values_mean_the_least_restrictive(exporter):
    manifest = exporter.export(f"/fhir/$export?_type=Observation&includeAssociatedData={LATEST},{RELEVANT}")

    assert exporter.ids(manifest)["Provenance"] == ["new-o1", "o2-and-p2", "o3", "old-o1"]


def test_only_the_provenance_of_what_the_filters_and_compartments_select(exporter):
    filtered = exporter.export(
        f"/fhir/$export?_type=Observation&includeAssociatedData={RELEVANT}"
        "&_typeFilter=Observation%3Fcategory%3Dvital-signs"
    )
    store(
        {
            "resourceType": "Group",
            "id": "g",
            "type": "person",
            "actual": True,
            "member": [{"entity": {"reference": "Patient/p2"}}],
        }
    )
    by_group = exporter.export(f"/fhir/Group/g/$export?_type=Patient,Observation&includeAssociatedData={RELEVANT}")

    assert exporter.ids(filtered)["Provenance"] == ["o3"]
    assert exporter.ids(by_group) == {"Observation": ["o2"], "Patient": ["p2"], "Provenance": ["o2-and-p2"]}


def test_a_provenance_the_export_takes_by_type_is_not_repeated(exporter):
    manifest = exporter.export(f"/fhir/$export?_type=Observation,Provenance&includeAssociatedData={RELEVANT}")

    assert exporter.ids(manifest)["Provenance"] == ["new-o1", "o2-and-p2", "o3", "old-o1", "unrelated"]


def test_a_post_kick_off_takes_the_value_as_a_coding(exporter):
    response = exporter.kick_off_post(
        "/fhir/$export",
        [
            {
                "name": "includeAssociatedData",
                "valueCoding": {
                    "system": "http://hl7.org/fhir/uv/bulkdata/CodeSystem/include-associated-data",
                    "code": LATEST,
                },
            }
        ],
    )

    assert response.status_code == 202, response.content
    assert JobInstance.objects.get().parameters["associated_data"] == LATEST


@pytest.mark.parametrize(
    "value, text",
    [
        ("_myPreset", "includeAssociatedData custom value '_myPreset' is not supported"),
        ("AllTheThings", "includeAssociatedData value 'AllTheThings' is not supported"),
    ],
)
def test_an_unsupported_value_is_400_and_lenient_leaves_it_out(exporter, value, text):
    assert_outcome(exporter.kick_off(f"/fhir/$export?includeAssociatedData={value}"), 400, text)

    response = exporter.kick_off(
        f"/fhir/$export?_type=Observation&includeAssociatedData={value},{LATEST}",
        prefer="respond-async, handling=lenient",
    )

    assert response.status_code == 202 and text in json.dumps(response.json())
    assert JobInstance.objects.get().parameters["associated_data"] == LATEST


def test_with_organize_output_by_it_is_refused(exporter):
    assert_outcome(
        exporter.kick_off(f"/fhir/$export?organizeOutputBy=Patient&includeAssociatedData={LATEST}"),
        400,
        "includeAssociatedData is not supported with organizeOutputBy",
    )
