"""Every failure is an OperationOutcome with the status the FHIR spec gives it."""

import threading

import pytest
from django.db import connection, transaction

from fhirstore.authority import SERVER
from fhirstore.storage import Write, save_resources
from tests.fhirstore.helpers import FhirClient, assert_outcome, patient
from tests.processes import wait_for_a_backend_waiting_on_a_lock

pytestmark = pytest.mark.django_db


def test_malformed_json_is_400(fhir):
    assert_outcome(fhir.post("/fhir/Patient", "{not json"), 400, "not valid JSON")


def test_a_body_that_is_not_an_object_is_400(fhir):
    assert_outcome(fhir.post("/fhir/Patient", "[1, 2]"), 400, "JSON object")


def test_a_resource_type_other_than_the_urls_is_400(fhir):
    assert_outcome(fhir.post("/fhir/Patient", {"resourceType": "Observation"}), 400, "does not match")


def test_an_update_whose_id_differs_from_the_urls_is_400(fhir):
    assert_outcome(fhir.put("/fhir/Patient/a", patient(id="b")), 400, "must match the id in the URL")


@pytest.mark.parametrize(
    "query, text",
    [
        ("nickname=Pete", "Unknown search parameter 'nickname'"),
        ("_include=Patient:organization", "not supported"),
        ("family:phonetic=x", "Modifier :phonetic"),
        ("birthdate=yesterday", "not a date"),
        ("_count=many", "_count must be a whole number"),
        ("_sort=family", "_sort='family' is not supported"),
        ("organization=a b", "not a reference"),
    ],
)
def test_bad_search_parameters_are_400(fhir, query, text):
    assert_outcome(fhir.get(f"/fhir/Patient?{query}"), 400, text)


def test_an_unknown_type_is_404(fhir):
    assert_outcome(fhir.get("/fhir/Spaceship/1"), 404, "Unknown resource type 'Spaceship'")
    assert_outcome(fhir.get("/fhir/Spaceship?name=x"), 404, "Unknown resource type")
    assert_outcome(fhir.post("/fhir/Spaceship", {"resourceType": "Spaceship"}), 404, "Unknown resource type")


def test_an_unknown_id_or_version_is_404(fhir):
    assert_outcome(fhir.get("/fhir/Patient/nobody"), 404, "Patient/nobody is not known")
    fhir.put("/fhir/Patient/p1", patient(id="p1"))
    assert_outcome(fhir.get("/fhir/Patient/p1/_history/9"), 404, "has no version 9")
    assert_outcome(fhir.delete("/fhir/Patient/nobody"), 404, "does not exist")


def test_an_unknown_path_under_fhir_is_404(fhir):
    assert_outcome(fhir.get("/fhir/Patient/p1/$everything"), 404, "No FHIR endpoint")


def test_a_deleted_resource_is_410(fhir):
    fhir.put("/fhir/Patient/p1", patient(id="p1"))
    fhir.delete("/fhir/Patient/p1")

    assert_outcome(fhir.get("/fhir/Patient/p1"), 410, "was deleted")


def test_an_if_match_on_an_old_version_is_412(fhir):
    fhir.put("/fhir/Patient/p1", patient(id="p1"))
    fhir.put("/fhir/Patient/p1", patient(id="p1", gender="male"))

    response = fhir.put("/fhir/Patient/p1", patient(id="p1"), HTTP_IF_MATCH='W/"1"')

    assert_outcome(response, 412, "is at version 2, not 1")
    assert fhir.get("/fhir/Patient/p1").json()["gender"] == "male"


def test_a_conditional_create_matching_several_is_412(fhir):
    for _ in range(2):
        fhir.post("/fhir/Patient", patient(family="Twin"))

    response = fhir.post("/fhir/Patient", patient(), HTTP_IF_NONE_EXIST="family=Twin")

    assert_outcome(response, 412, "more than one")


def test_an_unresolvable_conditional_reference_is_412(fhir):
    response = fhir.post("/fhir/Patient", patient(managingOrganization={"reference": "Organization?name=Nowhere"}))

    assert_outcome(response, 412, "matches no resource")


@pytest.mark.django_db(transaction=True)
def test_a_concurrent_create_of_the_same_resource_is_409(token):
    """Given a transaction that created Patient/race but has not committed, when a PUT creates it too,
    then the PUT waits for it and answers 409 once it commits."""
    inserted, release = threading.Event(), threading.Event()
    responses = []

    def first_writer():
        with transaction.atomic():
            save_resources([Write(patient(id="race"))], authority=SERVER)
            inserted.set()
            release.wait(120)
        connection.close()

    def second_writer():
        responses.append(FhirClient(f"Bearer {token}").put("/fhir/Patient/race", patient(id="race")))
        connection.close()

    threads = [threading.Thread(target=first_writer)]
    threads[0].start()
    assert inserted.wait(120)
    threads.append(threading.Thread(target=second_writer))
    threads[1].start()
    wait_for_a_backend_waiting_on_a_lock()
    release.set()
    for thread in threads:
        thread.join(120)

    assert_outcome(responses[0], 409, "at the same time")


def test_a_body_over_the_limit_is_413(fhir, settings):
    settings.FHIR_MAX_REQUEST_BYTES = 2048

    response = fhir.post("/fhir/Patient", patient(family="x" * 3000))

    assert_outcome(response, 413, "at most 2048")


def test_a_non_json_body_is_415(fhir):
    response = fhir.client.post("/fhir/Patient", "<Patient/>", content_type="application/fhir+xml")

    assert_outcome(response, 415, "not supported")


@pytest.mark.parametrize(
    "resource, text",
    [
        (patient(managingOrganization={"reference": "not a reference"}), "is not Type/id"),
        (patient(managingOrganization={"reference": "Organization/"}), "is not Type/id"),
        (patient(managingOrganization={"reference": "Spaceship/1"}), "is not Type/id"),
        (
            patient(managingOrganization={"reference": "urn:uuid:0b6a6e7e-5d7a-4bd4-8a80-8c5f0b1f7d0e"}),
            "does not resolve",
        ),
        (patient(meta="yesterday"), "meta must be an object"),
    ],
)
def test_a_structurally_invalid_resource_is_422(fhir, resource, text):
    assert_outcome(fhir.post("/fhir/Patient", resource), 422, text)


def test_full_validation_refuses_what_the_r4b_models_refuse(fhir, settings):
    settings.FHIR_FULL_VALIDATION = True

    response = fhir.post("/fhir/Patient", patient(birth_date="the seventies"))

    assert_outcome(response, 422, "birthDate")
    assert fhir.post("/fhir/Patient", patient()).status_code == 201


def test_without_full_validation_only_structure_is_checked(fhir):
    assert fhir.post("/fhir/Patient", patient(birth_date="the seventies")).status_code == 201


def test_an_unsupported_method_is_405_with_an_outcome(fhir):
    fhir.put("/fhir/Patient/p1", patient(id="p1"))

    assert_outcome(fhir.client.patch("/fhir/Patient/p1", "{}", content_type="application/json-patch+json"), 405)
