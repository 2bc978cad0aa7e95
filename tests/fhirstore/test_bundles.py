"""Transaction and batch Bundles at POST /fhir: urn:uuid and conditional references, all or nothing."""

import json
from collections import Counter

import pytest

from fhirstore.models import Resource
from fhirstore.references import reference_elements
from fhirstore.search_params import parse_relative_reference
from tests.fhirstore.helpers import SYNTHEA_BUNDLES, assert_outcome, patient

pytestmark = pytest.mark.django_db

PATIENT_URN = "urn:uuid:5d2a4f4e-0a8e-4d62-9c7b-1f0f4c3d7a10"


def transaction(*entries: dict, kind: str = "transaction") -> dict:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def post(resource: dict, full_url: str | None = None, **request) -> dict:
    entry = {"resource": resource, "request": {"method": "POST", "url": resource["resourceType"], **request}}
    return {"fullUrl": full_url, **entry} if full_url else entry


def heart_rate(subject: str) -> dict:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"code": "8867-4"}]},
        "subject": {"reference": subject},
    }


def stored(resource_type: str) -> list[dict]:
    return list(Resource.objects.filter(resource_type=resource_type, deleted=False).values_list("body", flat=True))


def test_urn_uuid_references_point_at_the_created_resources(fhir):
    response = fhir.post("/fhir", transaction(post(patient(), PATIENT_URN), post(heart_rate(PATIENT_URN))))

    assert response.status_code == 200
    body = response.json()
    assert body["type"] == "transaction-response"
    assert [e["response"]["status"] for e in body["entry"]] == ["201 Created", "201 Created"]
    [stored_patient], [stored_observation] = stored("Patient"), stored("Observation")
    assert stored_observation["subject"]["reference"] == f"Patient/{stored_patient['id']}"
    assert body["entry"][0]["response"]["location"] == f"Patient/{stored_patient['id']}/_history/1"


def test_conditional_references_resolve_against_the_store(fhir):
    fhir.put("/fhir/Patient/known", patient(id="known", identifier=[{"system": "urn:mrn", "value": "9"}]))

    response = fhir.post("/fhir", transaction(post(heart_rate("Patient?identifier=urn:mrn|9"))))

    assert response.status_code == 200
    assert stored("Observation")[0]["subject"]["reference"] == "Patient/known"


def test_a_conditional_reference_without_a_match_fails_the_whole_transaction(fhir):
    response = fhir.post("/fhir", transaction(post(patient()), post(heart_rate("Patient?identifier=urn:mrn|none"))))

    assert_outcome(response, 412, "Bundle.entry[1]: Conditional reference")
    assert Resource.objects.count() == 0


def test_if_none_exist_reuses_the_match_and_its_urn_points_there(fhir):
    fhir.put("/fhir/Patient/known", patient(id="known", identifier=[{"system": "urn:mrn", "value": "9"}]))

    response = fhir.post(
        "/fhir",
        transaction(post(patient(), PATIENT_URN, ifNoneExist="identifier=urn:mrn|9"), post(heart_rate(PATIENT_URN))),
    )

    assert [e["response"]["status"] for e in response.json()["entry"]] == ["200 OK", "201 Created"]
    assert len(stored("Patient")) == 1
    assert stored("Observation")[0]["subject"]["reference"] == "Patient/known"


def test_one_invalid_entry_rolls_back_every_entry(fhir):
    bad = {**heart_rate("Patient/x"), "performer": [{"reference": "not a reference"}]}

    response = fhir.post("/fhir", transaction(post(patient()), post(bad)))

    assert_outcome(response, 422, "Bundle.entry[1]")
    assert Resource.objects.count() == 0


def test_put_delete_and_get_entries(fhir):
    fhir.put("/fhir/Patient/old", patient(id="old"))
    fhir.put("/fhir/Patient/read-me", patient(id="read-me"))

    response = fhir.post(
        "/fhir",
        transaction(
            {"resource": patient(id="new"), "request": {"method": "PUT", "url": "Patient/new"}},
            {"request": {"method": "DELETE", "url": "Patient/old"}},
            {"request": {"method": "GET", "url": "Patient/read-me"}},
            {"request": {"method": "GET", "url": "Patient?_id=new"}},
        ),
    )

    entries = response.json()["entry"]
    assert [e["response"]["status"] for e in entries] == ["201 Created", "204 No Content", "200 OK", "200 OK"]
    assert entries[2]["resource"]["id"] == "read-me"
    assert entries[3]["resource"]["total"] == 1  # GETs run after the writes
    assert_outcome(fhir.get("/fhir/Patient/old"), 410)


def test_two_entries_changing_the_same_resource_are_400(fhir):
    entry = {"resource": patient(id="same"), "request": {"method": "PUT", "url": "Patient/same"}}

    assert_outcome(fhir.post("/fhir", transaction(entry, entry)), 400, "both change Patient/same")


def test_if_match_inside_a_transaction(fhir):
    fhir.put("/fhir/Patient/p1", patient(id="p1"))
    stale = {"resource": patient(id="p1"), "request": {"method": "PUT", "url": "Patient/p1", "ifMatch": 'W/"7"'}}

    assert_outcome(fhir.post("/fhir", transaction(stale)), 412, "not 7")


def test_a_batch_runs_each_entry_on_its_own(fhir):
    response = fhir.post(
        "/fhir",
        transaction(
            post(patient()),
            post({**patient(), "managingOrganization": {"reference": "nonsense"}}),
            {"request": {"method": "GET", "url": "Patient/missing"}},
            kind="batch",
        ),
    )

    assert response.status_code == 200
    entries = response.json()["entry"]
    assert response.json()["type"] == "batch-response"
    assert [e["response"]["status"] for e in entries] == ["201 Created", "422 Unprocessable Entity", "404 Not Found"]
    assert entries[1]["response"]["outcome"]["resourceType"] == "OperationOutcome"
    assert len(stored("Patient")) == 1


@pytest.mark.parametrize(
    "document, text",
    [
        ({"resourceType": "Patient"}, "takes a Bundle"),
        ({"resourceType": "Bundle", "type": "collection", "entry": []}, "transaction or batch"),
        (transaction({"request": {"method": "PATCH", "url": "Patient/1"}}), "not supported"),
        (transaction({"resource": patient(), "request": {"method": "POST"}}), "no request.url"),
    ],
)
def test_bundles_that_cannot_be_processed_are_400(fhir, document, text):
    assert_outcome(fhir.post("/fhir", document), 400, text)


@pytest.mark.parametrize("bundle_file", sorted(p.name for p in SYNTHEA_BUNDLES.glob("*.json")))
def test_the_synthea_bundles_load_completely_with_every_reference_resolved(fhir, bundle_file):
    bundle = json.loads((SYNTHEA_BUNDLES / bundle_file).read_text())

    response = fhir.post("/fhir", bundle)

    assert response.status_code == 200, response.content[:2000]
    assert {e["response"]["status"] for e in response.json()["entry"]} == {"201 Created"}
    assert Counter(Resource.objects.values_list("resource_type", flat=True)) == Counter(
        entry["resource"]["resourceType"] for entry in bundle["entry"]
    )
    for body in Resource.objects.values_list("body", flat=True):
        for element in reference_elements(body):
            reference = element["reference"]
            if reference.startswith("#"):
                continue  # a contained resource
            target = parse_relative_reference(reference)
            assert target is not None, reference
            assert Resource.objects.filter(resource_type=target[0], logical_id=target[1]).exists(), reference
