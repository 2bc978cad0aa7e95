"""Issue #29 item 7 and the control API's scopes: the operator role is staff (or `jobsite.operate`) AND the
`control` scope, decided on every request; a token's scopes bound what it may do to its user's own jobs."""

from __future__ import annotations

import uuid

import pytest
from django.contrib.auth.models import Permission

from batch.control import get_job, start_job
from jobsite.tokens import TokenError, issue_token, token_for
from tests.jobsite.helpers import with_token

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def no_broker(bus):
    """Starting a job announces its first chunk; these tests look at the API, not at Redis."""


def test_the_control_scope_is_refused_to_a_user_who_may_not_operate(django_user_model):
    client = django_user_model.objects.create_user("client")
    with pytest.raises(TokenError, match="control scope is for operators"):
        issue_token(client, ["control", "fhir:read"])
    service = django_user_model.objects.create_user("dashboard")
    service.user_permissions.add(Permission.objects.get(codename="operate"))
    assert issue_token(service, ["control"]).token.scopes == ["control"]


def test_a_control_token_stops_operating_when_its_user_is_no_longer_staff(django_user_model):
    former = django_user_model.objects.create_user("former", is_staff=True)
    operator = with_token(token_for(former, ["control", "fhir:write", "fhir:read"]))
    alices = start_job("DIAGNOSTIC_NOOP", {"chunks": 1, "sleep_ms": 60_000}, started_by="alice")
    assert [job["startedBy"] for job in operator.get("/control/jobs").json()["results"]] == ["alice"]

    former.is_staff = False
    former.save()

    assert operator.get("/control/jobs").json()["results"] == []
    assert operator.get(f"/control/jobs/{alices.id}").status_code == 404
    assert operator.delete(f"/control/jobs?instanceId={alices.id}").status_code == 404
    assert operator.post(f"/control/jobs/{alices.id}/restart").status_code == 404
    assert get_job(alices.id).status == "QUEUED"
    search_parameter = {
        "resourceType": "SearchParameter",
        "id": "sp",
        "url": "http://example.org/sp",
        "name": "sp",
        "status": "active",
        "description": "sp",
        "code": "sp",
        "base": ["Patient"],
        "type": "token",
        "expression": "Patient.gender",
    }
    response = operator.put("/fhir/SearchParameter/sp", search_parameter, format="json")
    assert response.status_code == 403, response.content


def export_job(started_by: str):
    return start_job(
        "BULK_EXPORT",
        {
            "export_id": str(uuid.uuid4()),
            "level": "system",
            "types": ["Patient"],
            "base_url": "http://testserver/fhir",
            "request_url": "http://testserver/fhir/$export",
            "transaction_time": "2026-01-01T00:00:00Z",
        },
        started_by=started_by,
    )


def test_a_read_only_token_cannot_cancel_or_restart_its_users_export(django_user_model):
    alice = django_user_model.objects.create_user("alice")
    reader, exporter = with_token(token_for(alice, ["fhir:read"])), with_token(token_for(alice, ["export"]))
    job = export_job("alice")

    assert reader.get(f"/control/jobs/{job.id}").status_code == 200  # reading needs no scope
    refused = reader.delete(f"/control/jobs?instanceId={job.id}")
    assert refused.status_code == 403 and "'export' scope" in refused.json()["errors"][0]
    assert reader.post(f"/control/jobs/{job.id}/restart").status_code == 403
    assert get_job(job.id).status == "QUEUED"

    assert exporter.delete(f"/control/jobs?instanceId={job.id}").status_code == 202
