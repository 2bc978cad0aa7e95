"""Create, read, vread, update, delete and history: versions and meta kept by the server."""

import pytest

from fhirstore.models import Resource, ResourceVersion, TokenIndex
from tests.fhirstore.helpers import assert_outcome, patient

pytestmark = pytest.mark.django_db


def test_create_assigns_an_id_and_version_1(fhir):
    response = fhir.post("/fhir/Patient", patient(id="client-chosen"))

    assert response.status_code == 201
    body = response.json()
    assert body["id"] != "client-chosen"  # the server assigns ids on create
    assert body["meta"]["versionId"] == "1"
    assert response["ETag"] == 'W/"1"'
    assert response["Location"] == f"http://testserver/fhir/Patient/{body['id']}/_history/1"
    assert response["Content-Type"] == "application/fhir+json; charset=utf-8"


def test_read_returns_the_stored_resource_with_its_meta(fhir):
    created = fhir.post("/fhir/Patient", patient()).json()

    response = fhir.get(f"/fhir/Patient/{created['id']}")

    assert response.status_code == 200
    assert response.json() == created
    assert response["ETag"] == 'W/"1"'
    assert "GMT" in response["Last-Modified"]


def test_plain_json_is_accepted(fhir):
    response = fhir.client.post("/fhir/Patient", patient(), content_type="application/json")

    assert response.status_code == 201


def test_a_number_beyond_64_bits_is_stored_as_sent(fhir):
    """Bodies are serialized with orjson, which refuses such integers; the store must not."""
    created = fhir.post(
        "/fhir/Basic",
        {"resourceType": "Basic", "code": {"text": "big"}, "extension": [{"url": "urn:x", "valueInteger64": 2**70}]},
    ).json()

    assert fhir.get(f"/fhir/Basic/{created['id']}").json()["extension"][0]["valueInteger64"] == 2**70


def test_update_makes_a_new_version_and_keeps_the_old_one(fhir):
    created = fhir.post("/fhir/Patient", patient(family="Before")).json()

    response = fhir.put(f"/fhir/Patient/{created['id']}", {**created, "name": [{"family": "After"}]})

    assert response.status_code == 200
    assert response.json()["meta"]["versionId"] == "2"
    assert fhir.get(f"/fhir/Patient/{created['id']}").json()["name"][0]["family"] == "After"
    old = fhir.get(f"/fhir/Patient/{created['id']}/_history/1")
    assert old.status_code == 200
    assert old.json()["name"][0]["family"] == "Before"
    assert old.json()["meta"]["versionId"] == "1"


def test_update_replaces_the_search_index_rows(fhir):
    created = fhir.post("/fhir/Patient", patient(family="Before")).json()

    fhir.put(f"/fhir/Patient/{created['id']}", {**created, "name": [{"family": "After"}]})

    assert fhir.get("/fhir/Patient?family=before").json()["total"] == 0
    assert fhir.get("/fhir/Patient?family=after").json()["total"] == 1


def test_update_of_an_unknown_id_creates_it_with_the_clients_id(fhir):
    response = fhir.put("/fhir/Patient/chosen-by-client", patient(id="chosen-by-client"))

    assert response.status_code == 201
    assert response.json()["id"] == "chosen-by-client"
    assert response.json()["meta"]["versionId"] == "1"
    assert fhir.get("/fhir/Patient/chosen-by-client").status_code == 200


def test_update_with_the_current_version_in_if_match_succeeds(fhir):
    fhir.put("/fhir/Patient/p1", patient(id="p1"))

    response = fhir.put("/fhir/Patient/p1", patient(id="p1", gender="female"), HTTP_IF_MATCH='W/"1"')

    assert response.status_code == 200
    assert response["ETag"] == 'W/"2"'


def test_delete_then_read_is_gone_and_history_keeps_every_version(fhir):
    fhir.put("/fhir/Patient/p1", patient(id="p1"))
    fhir.put("/fhir/Patient/p1", patient(id="p1", gender="male"))

    deleted = fhir.delete("/fhir/Patient/p1")

    assert deleted.status_code == 200
    assert deleted["ETag"] == 'W/"3"'
    assert_outcome(fhir.get("/fhir/Patient/p1"), 410, "deleted")
    history = fhir.get("/fhir/Patient/p1/_history").json()
    assert history["type"] == "history"
    assert history["total"] == 3
    assert [e["request"]["method"] for e in history["entry"]] == ["DELETE", "PUT", "POST"]
    assert "resource" not in history["entry"][0]
    assert [e["resource"]["meta"]["versionId"] for e in history["entry"][1:]] == ["2", "1"]
    assert not TokenIndex.objects.filter(resource__logical_id="p1").exists()  # deleted: found by no search


def test_deleting_twice_is_harmless(fhir):
    fhir.put("/fhir/Patient/p1", patient(id="p1"))
    fhir.delete("/fhir/Patient/p1")

    again = fhir.delete("/fhir/Patient/p1")

    assert again.status_code == 200
    assert "already deleted" in again.json()["issue"][0]["diagnostics"]
    assert Resource.objects.get(logical_id="p1").version_id == 2


def test_update_after_delete_brings_the_resource_back_as_a_new_version(fhir):
    fhir.put("/fhir/Patient/p1", patient(id="p1"))
    fhir.delete("/fhir/Patient/p1")

    response = fhir.put("/fhir/Patient/p1", patient(id="p1"))

    assert response.status_code == 201
    assert response.json()["meta"]["versionId"] == "3"
    assert_outcome(fhir.get("/fhir/Patient/p1/_history/2"), 410, "deletion")


def test_history_pages_with_count_and_offset(fhir):
    for gender in ("male", "female", "other", "unknown", "male"):
        fhir.put("/fhir/Patient/p1", patient(id="p1", gender=gender))

    first = fhir.get("/fhir/Patient/p1/_history?_count=2").json()
    following = fhir.client.get(next(link["url"] for link in first["link"] if link["relation"] == "next")).json()

    assert first["total"] == 5
    assert [e["resource"]["meta"]["versionId"] for e in first["entry"]] == ["5", "4"]
    assert [e["resource"]["meta"]["versionId"] for e in following["entry"]] == ["3", "2"]


def test_superseded_versions_live_in_the_history_table_only(fhir):
    fhir.put("/fhir/Patient/p1", patient(id="p1"))
    fhir.put("/fhir/Patient/p1", patient(id="p1", gender="male"))

    current = Resource.objects.get(logical_id="p1")

    assert current.version_id == 2
    assert list(ResourceVersion.objects.filter(resource=current).values_list("version_id", flat=True)) == [1]


def test_conditional_create_returns_the_existing_match(fhir):
    identified = patient(identifier=[{"system": "urn:mrn", "value": "42"}])
    first = fhir.post("/fhir/Patient", identified)

    second = fhir.post("/fhir/Patient", identified, HTTP_IF_NONE_EXIST="identifier=urn:mrn|42")

    assert second.status_code == 200
    assert second.json()["id"] == first.json()["id"]
    assert Resource.objects.filter(resource_type="Patient").count() == 1


def test_conditional_update_updates_the_one_match_or_creates(fhir):
    identified = patient(identifier=[{"system": "urn:mrn", "value": "7"}])

    created = fhir.put("/fhir/Patient?identifier=urn:mrn|7", identified)
    updated = fhir.put("/fhir/Patient?identifier=urn:mrn|7", {**identified, "gender": "female"})

    assert created.status_code == 201
    assert updated.status_code == 200
    assert updated.json()["id"] == created.json()["id"]
    assert updated.json()["meta"]["versionId"] == "2"


def test_conditional_references_in_a_create_are_resolved(fhir):
    fhir.put(
        "/fhir/Practitioner/doc",
        {
            "resourceType": "Practitioner",
            "id": "doc",
            "identifier": [{"system": "http://hl7.org/fhir/sid/us-npi", "value": "123"}],
        },
    )

    response = fhir.post(
        "/fhir/Patient",
        patient(generalPractitioner=[{"reference": "Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|123"}]),
    )

    assert response.status_code == 201
    assert response.json()["generalPractitioner"][0]["reference"] == "Practitioner/doc"


def test_prefer_return_minimal_sends_no_body(fhir):
    response = fhir.post("/fhir/Patient", patient(), HTTP_PREFER="return=minimal")

    assert response.status_code == 201
    assert response.content == b""
    assert response["Location"]


def test_metadata_lists_types_interactions_and_search_parameters(fhir):
    statement = fhir.get("/fhir/metadata").json()

    assert statement["resourceType"] == "CapabilityStatement"
    rest = statement["rest"][0]
    assert {"code": "transaction"} in rest["interaction"]
    observation = next(r for r in rest["resource"] if r["type"] == "Observation")
    assert {"read", "vread", "update", "delete", "history-instance", "create", "search-type"} == {
        i["code"] for i in observation["interaction"]
    }
    names = {p["name"] for p in observation["searchParam"]}
    assert {"_id", "_lastUpdated", "code", "category", "status", "subject", "patient", "date"} <= names


def test_options_describes_the_endpoint_in_json(fhir):
    response = fhir.client.options("/fhir/Patient")

    assert response.status_code == 200
    assert "POST" in response["Allow"]
    assert response["Content-Type"].startswith("application/fhir+json")
