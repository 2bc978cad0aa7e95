"""`$delete-expunge` over HTTP: kick-off (async and HAPI's synchronous answer), status, cancel, who may,
bad input, and the CapabilityStatement."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.db import connection

from batch import control
from batch.control import JobStatus
from fhirstore.models import Resource
from jobsite.tokens import token_for
from tests.fhirjobs.deleteexpunge.helpers import DELETER_SCOPES, no_rows, observation, rows_of, rows_of_keys
from tests.fhirjobs.helpers import patient
from tests.fhirstore.helpers import FhirClient, assert_outcome, store

pytestmark = pytest.mark.django_db(transaction=True)

ASYNC = {"HTTP_PREFER": "respond-async"}


def parameters(*urls: str, **extra) -> dict:
    values = [{"name": "url", "valueString": url} for url in urls]
    kinds = {"batchSize": "valueInteger", "cascade": "valueBoolean", "cascadeMaxRounds": "valueInteger"}
    values += [{"name": name, kinds[name]: value} for name, value in extra.items()]
    return {"resourceType": "Parameters", "parameter": values}


def status_path(response) -> str:
    return response["Content-Location"].removeprefix("http://testserver")


def test_an_async_kick_off_answers_202_and_its_status_url_the_counts(deleter, bus):
    store(patient("p1", active=False), patient("p2", active=False), patient("p3"))
    kicked = deleter.post("/fhir/$delete-expunge", parameters("Patient?active=false", batchSize=1), **ASYNC)
    assert_outcome(kicked, 202, "has started")
    assert "/fhir/$delete-expunge-status?_jobId=" in kicked["Content-Location"]

    assert deleter.post(status_path(kicked), parameters("Patient?")).status_code == 405
    running = deleter.get(status_path(kicked))
    assert running.status_code == 202 and running["X-Progress"] and running["Retry-After"] == "2"
    bus.drain()
    done = assert_outcome(deleter.get(status_path(kicked)), 200, "Delete-expunge completed: 2 resources deleted")
    assert [issue["diagnostics"] for issue in done["issue"]][1:] == ["Patient: 2 deleted"]
    assert rows_of("Patient")["resource"] == 1


def test_without_prefer_it_answers_as_hapi_a_parameters_with_the_job_id(deleter, bus):
    store(patient("p1"))
    response = deleter.post("/fhir/$delete-expunge", parameters("Patient?"))
    assert response.status_code == 200, response.content
    found = {p["name"]: p for p in response.json()["parameter"]}
    assert found["status"]["valueUrl"] == response["Content-Location"]
    bus.drain()
    assert control.get_job(found["jobId"]["valueString"]).status == JobStatus.COMPLETED


def test_a_referenced_resource_is_a_409_naming_the_referrers(deleter):
    store(patient("p1"), observation("o1", "Patient/p1"), observation("o2", "Patient/p1"))
    outcome = assert_outcome(
        deleter.post("/fhir/$delete-expunge", parameters("Patient?"), **ASYNC),
        409,
        "Observation/o1 refers to Patient/p1 (subject); Observation/o2 refers to Patient/p1",
    )
    assert outcome["issue"][0]["code"] == "conflict"
    assert rows_of("Patient")["resource"] == 1


def test_a_refusal_found_while_running_is_a_409_on_the_status_url(deleter, bus):
    store(patient("p1"))
    kicked = deleter.post("/fhir/$delete-expunge", parameters("Patient?"), **ASYNC)
    store(observation("late", "Patient/p1"))
    bus.drain()
    assert_outcome(deleter.get(status_path(kicked)), 409, "Observation/late refers to Patient/p1")


@pytest.mark.parametrize(
    "body, problem",
    [
        ({"resourceType": "Patient"}, "takes a Parameters resource"),
        (parameters(), "at least one url"),
        (parameters("Nope?x=1"), "Unknown resource type"),
        (parameters("Patient?nope=1"), "nope"),
        (parameters("SearchParameter?"), "cannot be delete-expunged"),
        (parameters("Patient?", batchSize=0), "batch_size"),
        (parameters("Patient?", cascadeMaxRounds=1000), "cascade_max_rounds"),
        ({"resourceType": "Parameters", "parameter": [{"name": "url", "valueInteger": 3}]}, "not understood"),
    ],
)
def test_bad_input_is_a_400_before_anything_runs(deleter, body, problem):
    assert_outcome(deleter.post("/fhir/$delete-expunge", body, **ASYNC), 400, problem)
    assert not control.list_jobs()[:1]


def test_another_users_job_is_not_found_and_an_operator_sees_every_one(deleter, django_user_model, bus):
    store(patient("p1"))
    kicked = deleter.post("/fhir/$delete-expunge", parameters("Patient?"), **ASYNC)
    other = django_user_model.objects.create_user("other")
    other.user_permissions.add(Permission.objects.get(codename="delete_expunge"))
    assert_outcome(FhirClient(f"Bearer {token_for(other, DELETER_SCOPES)}").get(status_path(kicked)), 404)
    staff = django_user_model.objects.create_user("ops", is_staff=True)
    operator = FhirClient(f"Bearer {token_for(staff, [*DELETER_SCOPES, 'control'])}")
    assert operator.get(status_path(kicked)).status_code == 202


def test_cancel_stops_it_and_its_status_is_then_not_found(deleter, bus):
    store(patient("p1"))
    kicked = deleter.post("/fhir/$delete-expunge", parameters("Patient?"), **ASYNC)
    assert_outcome(deleter.delete(status_path(kicked)), 202, "is cancelled")
    bus.drain()
    assert_outcome(deleter.get(status_path(kicked)), 404, "cancelled")
    assert rows_of("Patient")["resource"] == 1


def test_the_status_urls_delete_cancels_only_a_delete_expunge_not_another_job_of_the_same_user(deleter, bus):
    """A DELETE on the status URL with the id of another kind of job of the same user is a 404: it cancels
    nothing (before, it cancelled whatever job of the user the id named)."""
    other_job = control.start_job("DIAGNOSTIC_NOOP", {}, started_by="deleter")

    response = deleter.delete(f"/fhir/$delete-expunge-status?_jobId={other_job.id}")

    assert_outcome(response, 404)
    assert not control.get_job(other_job.id).cancelled


def test_who_may(django_user_model):
    """A user without the permission, a token without admin:delete or fhir:write: 403. Staff may."""
    plain = django_user_model.objects.create_user("plain")
    permitted = django_user_model.objects.create_user("permitted")
    permitted.user_permissions.add(Permission.objects.get(codename="delete_expunge"))
    staff = django_user_model.objects.create_user("staff", is_staff=True)
    body = parameters("Patient?")
    for user, scopes in [
        (plain, DELETER_SCOPES),
        (permitted, ["fhir:read", "fhir:write"]),
        (permitted, ["fhir:read", "admin:delete"]),
        (staff, ["fhir:write", "control"]),
    ]:
        assert_outcome(
            FhirClient(f"Bearer {token_for(user, scopes)}").post("/fhir/$delete-expunge", body, **ASYNC), 403
        )
    assert (
        FhirClient(f"Bearer {token_for(staff, DELETER_SCOPES)}")
        .post("/fhir/$delete-expunge", body, **ASYNC)
        .status_code
        == 202
    )
    assert FhirClient().post("/fhir/$delete-expunge", body, **ASYNC).status_code == 401
    assert len(control.list_jobs()[:5]) == 1  # the staff one


def test_the_capability_statement_lists_the_operation(deleter):
    operations = deleter.get("/fhir/metadata").json()["rest"][0]["operation"]
    assert {
        "name": "delete-expunge",
        "definition": "http://hapifhir.io/fhir/OperationDefinition/delete-expunge",
    } in operations


def test_delete_of_a_type_with_expunge_deletes_every_match_sharing_one_last_updated(deleter, bus):
    """The issue's acceptance: 20,000 matches sharing one lastUpdated, 20 pages of 1,000 (HAPI #5150 deleted the
    first 10,000 and stopped)."""
    from datetime import UTC, datetime

    store(
        *(observation(f"o{n:05}") for n in range(20_000)),
        observation("other", code="2339-0"),
        at=datetime(2024, 1, 1, tzinfo=UTC),
    )
    with connection.cursor() as cursor:
        # What autovacuum does after a write this size. Without row estimates the planner joins each page's
        # 1,000 rows to all 20,000 index rows of the code (20 s a page, by logical id as by key).
        cursor.execute("ANALYZE")
    matches = list(
        Resource.objects.filter(resource_type="Observation").exclude(logical_id="other").values_list("id", flat=True)
    )
    response = deleter.delete("/fhir/Observation?code=http://loinc.org|8867-4&_expunge=true")
    assert_outcome(response, 200, "submitted")
    bus.drain()
    job_id = response["Content-Location"].rpartition("_jobId=")[2]
    job = control.get_job(job_id)
    assert job.status == JobStatus.COMPLETED and job.step("delete-expunge").total == 20
    assert job.report == {"deleted": {"Observation": 20_000}, "total": 20_000}
    assert rows_of_keys(matches) == no_rows()  # every table
    assert rows_of("Observation")["resource"] == 1


def test_the_type_endpoint_keeps_the_stores_interactions_and_refuses_a_plain_delete(deleter, django_user_model):
    assert deleter.post("/fhir/Patient", patient("x")).status_code == 201
    assert deleter.get("/fhir/Patient?name=x").json()["total"] == 1
    assert_outcome(deleter.delete("/fhir/Patient?name=x"), 400, "needs _expunge=true")
    plain = FhirClient(f"Bearer {token_for(django_user_model.objects.create_user('plain'), DELETER_SCOPES)}")
    assert plain.get("/fhir/Patient?name=x").status_code == 200
    assert_outcome(plain.delete("/fhir/Patient?name=x&_expunge=true"), 403)
    assert rows_of("Patient")["resource"] == 1
