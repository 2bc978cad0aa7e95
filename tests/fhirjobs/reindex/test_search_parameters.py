"""Custom SearchParameters through the REST API: not trusted until their reindex completed, then exact."""

from __future__ import annotations

import threading

import pytest
from django.db import connection, transaction

from batch import control
from batch.control import JobStatus
from fhirstore.authority import SERVER
from fhirstore.models import CustomSearchParameter, Resource, TokenIndex
from fhirstore.storage import Write, save_resources
from jobsite.tokens import token_for
from tests.fhirjobs.helpers import BIRTH_SEX, patient
from tests.fhirjobs.reindex.helpers import search_parameter
from tests.fhirstore.helpers import FhirClient, assert_outcome, store

pytestmark = pytest.mark.django_db(transaction=True)


def found_ids(client, query: str) -> set[str]:
    response = client.get(f"/fhir/Patient?{query}&_count=1000")
    assert response.status_code == 200, response.content
    return {entry["resource"]["id"] for entry in response.json().get("entry", []) if entry["search"]["mode"] == "match"}


def scanned_ids(code: str) -> set[str]:
    """The Patients whose bodies carry this birth sex, by a direct scan of the bodies."""
    return {
        body["id"]
        for body in Resource.objects.filter(resource_type="Patient", deleted=False).values_list("body", flat=True)
        if any(e.get("url") == BIRTH_SEX and e.get("valueCode") == code for e in body.get("extension", []))
    }


def test_a_new_parameter_is_refused_until_its_automatic_reindex_completed_then_finds_exactly_the_matches(operator, bus):
    store(patient("p1", birth_sex="F"), patient("p2", birth_sex="M"), patient("p3", birth_sex="F"), patient("p4"))
    created = operator.post("/fhir/SearchParameter", search_parameter())
    assert created.status_code == 201, created.content

    assert_outcome(operator.get("/fhir/Patient?birthsex=F"), 400, "is being indexed")
    store(patient("p5", birth_sex="F"))  # written while the parameter waits for its reindex: indexed by the write
    job_id = CustomSearchParameter.objects.get(code="birthsex").reindex_job_id
    bus.drain()

    assert control.get_job(job_id).status == JobStatus.COMPLETED
    assert found_ids(operator, "birthsex=F") == scanned_ids("F") == {"p1", "p3", "p5"}
    assert found_ids(operator, "birthsex=M") == scanned_ids("M") == {"p2"}


def test_changing_the_expression_reindexes_again_and_results_follow_it(operator, bus):
    store(patient("p1", birth_sex="F", gender="male"), patient("p2", birth_sex="M", gender="female"))
    sp_id = operator.post("/fhir/SearchParameter", search_parameter()).json()["id"]
    bus.drain()
    assert found_ids(operator, "birthsex=F") == {"p1"}

    changed = operator.put(
        f"/fhir/SearchParameter/{sp_id}", {**search_parameter(expression="Patient.gender"), "id": sp_id}
    )
    assert changed.status_code == 200, changed.content
    assert_outcome(operator.get("/fhir/Patient?birthsex=female"), 400, "is being indexed")
    bus.drain()

    assert found_ids(operator, "birthsex=female") == {"p2"}
    assert found_ids(operator, "birthsex=F") == set()


def test_a_deleted_parameter_is_an_unknown_one_and_its_rows_go(operator, bus):
    store(patient("p1", birth_sex="F"))
    sp_id = operator.post("/fhir/SearchParameter", search_parameter()).json()["id"]
    bus.drain()
    assert found_ids(operator, "birthsex=F") == {"p1"}

    assert operator.delete(f"/fhir/SearchParameter/{sp_id}").status_code == 200
    bus.drain()

    assert_outcome(operator.get("/fhir/Patient?birthsex=F"), 400, "Unknown search parameter")
    assert not TokenIndex.objects.filter(param="birthsex").exists()


def test_a_parameter_with_a_built_in_code_and_base_overrides_it_and_deleting_it_brings_the_built_in_back(operator, bus):
    store(patient("p1", gender="male", birthDate="1970-01-01"), patient("p2", gender="female"))
    sp_id = operator.post(
        "/fhir/SearchParameter", search_parameter("gender", expression="Patient.birthDate.exists()")
    ).json()["id"]
    bus.drain()
    assert found_ids(operator, "gender=true") == {"p1"}
    assert found_ids(operator, "gender=male") == set()

    operator.delete(f"/fhir/SearchParameter/{sp_id}")
    assert_outcome(operator.get("/fhir/Patient?gender=male"), 400, "is being indexed")
    bus.drain()

    assert found_ids(operator, "gender=male") == {"p1"}
    assert not CustomSearchParameter.objects.exists()


def test_a_description_change_needs_no_reindex(operator, bus):
    sp_id = operator.post("/fhir/SearchParameter", search_parameter()).json()["id"]
    bus.drain()
    operator.put(f"/fhir/SearchParameter/{sp_id}", {**search_parameter(description="new words"), "id": sp_id})
    assert not bus.sent
    assert found_ids(operator, "birthsex=F") == set()


@pytest.mark.parametrize(
    "kind, expression, query, expected",
    [
        ("string", "Patient.name.family", "maiden=smi", {"p1"}),
        ("date", "Patient.deceased.ofType(dateTime)", "maiden=ge2020", {"p1"}),
        ("reference", "Patient.managingOrganization", "maiden=Organization/o1", {"p1"}),
    ],
)
def test_string_date_and_reference_parameters(operator, bus, kind, expression, query, expected):
    store(
        patient(
            "p1",
            name=[{"family": "Smith"}],
            deceasedDateTime="2021-03-04",
            managingOrganization={"reference": "Organization/o1"},
        ),
        patient("p2", name=[{"family": "Jones"}], deceasedBoolean=False),
    )
    operator.post("/fhir/SearchParameter", search_parameter("maiden", expression, kind=kind, target=["Organization"]))
    bus.drain()
    assert found_ids(operator, query) == expected


def test_draft_and_retired_parameters_are_stored_but_not_indexed(operator, bus):
    response = operator.post("/fhir/SearchParameter", search_parameter(status="draft"))
    assert response.status_code == 201
    assert not bus.sent and not CustomSearchParameter.objects.exists()


@pytest.mark.parametrize(
    "change, problem",
    [
        ({"type": "uri"}, "type 'uri' is not supported"),
        ({"base": ["Nonsense"]}, "is not a resource type"),
        ({"expression": "Patient.where("}, "is not valid FHIRPath"),
        ({"code": "_hidden"}, "must be a search parameter name"),
        ({"expression": None}, "expression (FHIRPath) is required"),
    ],
)
def test_a_parameter_that_cannot_be_indexed_is_refused_and_nothing_is_written(operator, bus, change, problem):
    response = operator.post("/fhir/SearchParameter", {**search_parameter(), **change})
    assert_outcome(response, 422, problem)
    assert not Resource.objects.filter(resource_type="SearchParameter").exists()
    assert not bus.sent


def test_a_second_parameter_with_the_same_code_and_base_is_refused(operator, bus):
    operator.post("/fhir/SearchParameter", search_parameter())
    assert_outcome(operator.post("/fhir/SearchParameter", search_parameter()), 422, "is defined already")


def test_an_operator_token_may_write_search_parameters(django_user_model, bus):
    user = django_user_model.objects.create_user("ops", is_staff=True)
    operator = FhirClient(f"Bearer {token_for(user, ['control', 'fhir:write', 'fhir:read'])}")
    assert operator.post("/fhir/SearchParameter", search_parameter()).status_code == 201


def test_only_operators_may_write_search_parameters(fhir, operator):
    assert_outcome(fhir.post("/fhir/SearchParameter", search_parameter()), 403, "manage_search_parameters")
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"resource": search_parameter(), "request": {"method": "POST", "url": "SearchParameter"}}],
    }
    assert_outcome(fhir.post("/fhir", bundle), 403, "manage_search_parameters")
    assert fhir.get("/fhir/SearchParameter").status_code == 200  # reading them is not restricted
    assert not Resource.objects.filter(resource_type="SearchParameter").exists()


def test_with_the_warn_setting_a_search_answers_the_matches_so_far_with_a_warning(operator, bus, settings):
    settings.FHIR_SEARCH_WHILE_INDEXING = "warn"
    store(patient("p1", birth_sex="F"))
    operator.post("/fhir/SearchParameter", search_parameter())
    store(patient("p2", birth_sex="F"))  # indexed by its write; p1 waits for the reindex

    bundle = operator.get("/fhir/Patient?birthsex=F").json()
    assert [e["resource"]["id"] for e in bundle["entry"] if e["search"]["mode"] == "match"] == ["p2"]
    warnings = [e["resource"]["issue"][0] for e in bundle["entry"] if e["search"]["mode"] == "outcome"]
    assert warnings[0]["severity"] == "warning" and "may be incomplete" in warnings[0]["diagnostics"]

    bus.drain()
    bundle = operator.get("/fhir/Patient?birthsex=F").json()
    assert sorted(e["resource"]["id"] for e in bundle["entry"]) == ["p1", "p2"]


def test_a_write_in_flight_when_a_parameter_is_created_is_indexed_by_the_write_or_the_reindex(operator, bus):
    """The write took the parameters lock (shared) and extracted without the new parameter; the
    SearchParameter waits for it to commit, so the reindex that follows sees the write."""
    writing, release = threading.Event(), threading.Event()

    def slow_write():
        try:
            with transaction.atomic():
                save_resources([Write(patient("late", birth_sex="F"))], authority=SERVER)
                writing.set()
                release.wait(60)
        finally:
            connection.close()

    def create_parameter():
        try:
            created.append(operator.post("/fhir/SearchParameter", search_parameter()).status_code)
        finally:
            connection.close()

    created: list[int] = []
    writer = threading.Thread(target=slow_write)
    writer.start()
    assert writing.wait(60)
    creator = threading.Thread(target=create_parameter)
    creator.start()
    creator.join(1)
    assert creator.is_alive()  # waiting for the write's transaction
    release.set()
    writer.join(60)
    creator.join(60)
    assert created == [201]
    bus.drain()
    assert found_ids(operator, "birthsex=F") == {"late"}
