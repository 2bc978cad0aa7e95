"""`POST /fhir/Patient/$merge` over HTTP: HAPI's answers (merged, preview, Task), bad input as 400 / 422
OperationOutcomes, who may, and the CapabilityStatement; then `$hapi.fhir.replace-references`."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission

from fhirstore.models import Resource
from jobsite.tokens import token_for
from tests.fhirjobs.helpers import patient
from tests.fhirjobs.merge.helpers import ASYNC, merge_parameters, observation, output
from tests.fhirstore.helpers import FhirClient, assert_outcome, store

pytestmark = pytest.mark.django_db

MERGE = "/fhir/Patient/$merge"
REPLACE = "/fhir/$hapi.fhir.replace-references"


def test_a_merge_answers_the_input_an_outcome_and_the_merged_target(merger):
    store(patient("src"), patient("tgt"), observation("o1", "Patient/src"))
    body = merge_parameters()

    response = merger.post(MERGE, body)

    assert response.status_code == 200, response.content
    answer = response.json()
    assert [parameter["name"] for parameter in answer["parameter"]] == ["input", "outcome", "result"]
    assert output(answer, "input") == body
    assert "1 resources referring to the source updated" in output(answer, "outcome")["issue"][0]["diagnostics"]
    assert output(answer, "result")["link"] == [{"other": {"reference": "Patient/src"}, "type": "replaces"}]
    assert merger.get("/fhir/Observation/o1").json()["subject"] == {"reference": "Patient/tgt"}


def test_a_preview_answers_what_would_change_and_writes_nothing(merger):
    store(patient("src"), patient("tgt"), observation("o1", "Patient/src"))
    response = merger.post(MERGE, merge_parameters(preview=True))
    assert response.status_code == 200, response.content
    assert "Merge would update 3 resources" in str(output(response.json(), "outcome"))
    assert set(Resource.objects.values_list("version_id", flat=True)) == {1}


@pytest.mark.django_db(transaction=True)
def test_respond_async_answers_202_with_the_task_that_the_job_completes(merger, bus):
    store(patient("src"), patient("tgt"), *(observation(f"o{n}", "Patient/src") for n in range(5)))

    response = merger.post(MERGE, merge_parameters(batch_size=2), **ASYNC)

    assert response.status_code == 202, response.content
    task = output(response.json(), "task")
    assert merger.get(f"/fhir/Task/{task['id']}").json()["status"] == "in-progress"
    bus.drain()
    done = merger.get(f"/fhir/Task/{task['id']}").json()
    assert done["status"] == "completed"
    assert {"type": {"text": "resources-updated"}, "valueInteger": 5} in done["output"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"resourceType": "Patient"}, "takes a Parameters resource"),
        (merge_parameters(target=None), "give the target patient by target-patient or by target-patient-identifier"),
        (
            merge_parameters(source_patient_identifier={"system": "urn:mrn", "value": "A1"}),
            "give the source patient by source-patient or by source-patient-identifier (one of them)",
        ),
        (merge_parameters(source="Observation/o1"), "source-patient must be a reference Patient/<id>"),
        (merge_parameters(target="Patient/src"), "are the same patient"),
        (merge_parameters(result_patient={"resourceType": "Patient", "id": "other"}), "must have the target's id"),
        (merge_parameters(batch_size=0), "batch-size must be at least 1"),
        (
            {"resourceType": "Parameters", "parameter": [{"name": "source", "valueString": "x"}]},
            "'source' is not understood",
        ),
    ],
)
def test_malformed_parameters_are_a_400_naming_the_problem(merger, body, message):
    store(patient("src"), patient("tgt"))
    assert_outcome(merger.post(MERGE, body), 400, message)


def test_patients_that_cannot_be_merged_are_a_422_and_too_many_referrers_a_412(merger, settings):
    store(patient("src"), patient("tgt"), observation("o1", "Patient/src"), observation("o2", "Patient/src"))
    assert_outcome(merger.post(MERGE, merge_parameters(source="Patient/nobody")), 422, "does not exist")
    settings.MERGE_SYNC_MAX_RESOURCES = 1
    assert_outcome(merger.post(MERGE, merge_parameters()), 412, "send the header Prefer: respond-async")
    assert set(Resource.objects.values_list("version_id", flat=True)) == {1}


def test_who_may(django_user_model):
    """A user without the permission, or a token without fhir:write: 403. Staff may; anonymous: 401."""
    store(patient("src"), patient("tgt"))
    plain = django_user_model.objects.create_user("plain")
    permitted = django_user_model.objects.create_user("permitted")
    permitted.user_permissions.add(Permission.objects.get(codename="merge_patients"))
    staff = django_user_model.objects.create_user("staff", is_staff=True)
    body = merge_parameters(preview=True)
    for user, scopes in [(plain, ["fhir:read", "fhir:write"]), (permitted, ["fhir:read"])]:
        assert_outcome(FhirClient(f"Bearer {token_for(user, scopes)}").post(MERGE, body), 403)
    assert FhirClient().post(MERGE, body).status_code == 401
    assert FhirClient(f"Bearer {token_for(staff, ['fhir:write'])}").post(MERGE, body).status_code == 200


def test_the_capability_statement_lists_the_operation_on_patient(merger):
    resources = merger.get("/fhir/metadata").json()["rest"][0]["resource"]
    [patient_entry] = [entry for entry in resources if entry["type"] == "Patient"]
    assert {"name": "merge", "definition": "http://hl7.org/fhir/OperationDefinition/Patient-merge"} in patient_entry[
        "operation"
    ]


def replace_parameters(source: str = "Patient/src", target: str = "Patient/tgt", **extra) -> dict:
    values = [
        {"name": "source-reference-id", "valueString": source},
        {"name": "target-reference-id", "valueString": target},
    ]
    values += [{"name": name.replace("_", "-"), "valueInteger": value} for name, value in extra.items()]
    return {"resourceType": "Parameters", "parameter": values}


def test_replace_references_points_every_referrer_at_the_target_and_leaves_both_resources(merger):
    store(patient("src"), patient("tgt"), observation("o1", "Patient/src"), observation("o2", "Patient/src"))
    response = merger.post(REPLACE, replace_parameters())
    assert response.status_code == 200, response.content
    assert "2 resources referring to Patient/src now refer to Patient/tgt" in str(output(response.json(), "outcome"))
    assert merger.get("/fhir/Observation/o2").json()["subject"] == {"reference": "Patient/tgt"}
    assert dict(Resource.objects.filter(resource_type="Patient").values_list("logical_id", "version_id")) == {
        "src": 1,
        "tgt": 1,
    }
    [provenance] = Resource.objects.filter(resource_type="Provenance").values_list("body", flat=True)
    assert provenance["activity"]["coding"][0]["code"] == "update" and len(provenance["target"]) == 2
    again = merger.post(REPLACE, replace_parameters(resource_limit=1))  # nothing left to rewrite
    assert "0 resources referring" in str(output(again.json(), "outcome"))
    store(observation("o3", "Patient/src"), observation("o4", "Patient/src"))
    assert_outcome(merger.post(REPLACE, replace_parameters(resource_limit=1)), 412, "more than resource-limit (1)")


@pytest.mark.django_db(transaction=True)
def test_replace_references_with_respond_async_is_a_job_and_its_task(merger, bus):
    store(patient("src"), patient("tgt"), *(observation(f"o{n}", "Patient/src") for n in range(3)))
    response = merger.post(REPLACE, replace_parameters(), **ASYNC)
    assert response.status_code == 202, response.content
    task = output(response.json(), "task")
    bus.drain()
    done = merger.get(f"/fhir/Task/{task['id']}").json()
    assert done["status"] == "completed" and done["code"] == {"text": "$hapi.fhir.replace-references"}
    assert {"type": {"text": "resources-updated"}, "valueInteger": 3} in done["output"]
    assert merger.get("/fhir/Observation/o2").json()["subject"] == {"reference": "Patient/tgt"}


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (replace_parameters(source="Patient"), 400, "source-reference-id must be Type/id"),
        (replace_parameters(target="Observation/o1"), 400, "must be of the same resource type"),
        (replace_parameters(target="Patient/src"), 400, "are the same resource"),
        (replace_parameters(resource_limit=0), 400, "resource-limit must be at least 1"),
        ({"resourceType": "Parameters", "parameter": []}, 400, "source-reference-id is needed"),
        (replace_parameters(target="Patient/nobody"), 422, "target Patient/nobody does not exist"),
    ],
)
def test_replace_references_bad_input(merger, body, status, message):
    store(patient("src"), patient("tgt"))
    assert_outcome(merger.post(REPLACE, body), status, message)
