"""BULK_EXPORT_KICKOFF=post-only: the Bulk Data STU4 ballot's kick-off (POST `Parameters` only, no comma-joined
lists) and manifest (`outcome` for `error`, `manifestType` and `outputFormat`, no `request`); `both` keeps STU3's."""

import pytest

from fhirjobs.bulkexport.models import BulkExport
from tests.fhirjobs.helpers import patient
from tests.fhirstore.helpers import assert_outcome, store

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def stored_patient():
    store(patient("p1"))


@pytest.fixture
def post_only(settings):
    settings.BULK_EXPORT_KICKOFF = "post-only"


def test_post_only_refuses_a_get_kick_off_with_405_allow_post_and_an_operation_outcome(exporter, post_only):
    response = exporter.kick_off("/fhir/$export?_type=Patient")

    assert_outcome(response, 405, "POST a Parameters resource")
    assert "POST" in response["Allow"] and "GET" not in response["Allow"]
    assert not BulkExport.objects.exists()


@pytest.mark.parametrize("name", ["_type", "_elements"])
def test_post_only_refuses_a_comma_joined_list(exporter, post_only, name):
    value = "Patient,Observation" if name == "_type" else "name,gender"

    response = exporter.kick_off_post("/fhir/$export", [{"name": name, "valueString": value}])

    assert_outcome(response, 400, "is comma-joined: repeat the parameter")
    assert not BulkExport.objects.exists()


def test_post_only_refuses_parameters_in_the_url_of_a_post(exporter, post_only):
    response = exporter.fhir.post(
        "/fhir/$export?_type=Patient", {"resourceType": "Parameters", "parameter": []}, HTTP_PREFER="respond-async"
    )

    assert_outcome(response, 400, "not the URL")


def test_post_only_takes_a_repeated_parameter_and_answers_the_stu4_manifest(exporter, post_only):
    response = exporter.kick_off_post(
        "/fhir/$export", [{"name": "_type", "valueString": "Patient"}, {"name": "_type", "valueString": "Observation"}]
    )
    assert response.status_code == 202, response.content

    manifest = exporter.finish(response["Content-Location"])

    assert list(manifest) == [
        "manifestType",
        "transactionTime",
        "requiresAccessToken",
        "outputFormat",
        "output",
        "deleted",
        "outcome",
    ]
    assert manifest["manifestType"] == "http://hl7.org/fhir/uv/bulkdata/StructureDefinition/BulkDataManifest"
    assert manifest["outputFormat"] == "application/fhir+ndjson"
    assert manifest["outcome"] == [] and [entry["type"] for entry in manifest["output"]] == ["Patient"]


def test_post_only_partial_manifests_have_the_stu4_shape_too(exporter, post_only):
    response = exporter.kick_off_post(
        "/fhir/$export",
        [{"name": "_type", "valueString": "Patient"}, {"name": "allowPartialManifests", "valueBoolean": True}],
    )

    manifest = exporter.finish(response["Content-Location"])

    assert "outcome" in manifest and "error" not in manifest and "request" not in manifest


def test_both_keeps_get_and_comma_joined_lists_and_the_stu3_manifest(exporter):
    manifest = exporter.export("/fhir/$export?_type=Patient,Observation")

    assert {"transactionTime", "request", "requiresAccessToken", "output", "error"} <= set(manifest)
    assert "outcome" not in manifest and "manifestType" not in manifest
