"""Who may do what on /control/jobs: clients see and act on only their own jobs (another user's is a 404, as if
it did not exist); operators — staff sessions, tokens with the `control` scope — on every job."""

import os
import subprocess
import sys

import pytest
from django.test import override_settings
from rest_framework.test import APIClient

from batch.control import get_job, start_job
from jobsite.tokens import token_for
from tests.jobsite.helpers import with_token
from tests.processes import PROJECT_DIR

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def no_broker(bus):
    """Starting a job announces its first chunk; these tests look at the API, not at Redis."""


@pytest.fixture
def alice(django_user_model) -> APIClient:
    return with_token(token_for(django_user_model.objects.create_user("alice")))


@pytest.fixture
def bob(django_user_model) -> APIClient:
    return with_token(token_for(django_user_model.objects.create_user("bob")))


@pytest.fixture
def alices_job():
    return start_job("DIAGNOSTIC_NOOP", {"chunks": 1, "sleep_ms": 60_000}, started_by="alice")


def test_a_client_lists_only_its_own_jobs(alice, bob, alices_job):
    start_job("DIAGNOSTIC_NOOP", {"chunks": 1}, started_by="bob")

    assert [job["instanceId"] for job in alice.get("/control/jobs").json()["results"]] == [str(alices_job.id)]
    assert [job["startedBy"] for job in bob.get("/control/jobs").json()["results"]] == ["bob"]


@pytest.mark.parametrize(
    "method, path",
    [
        ("get", "/control/jobs/{id}"),
        ("delete", "/control/jobs?instanceId={id}"),
        ("post", "/control/jobs/{id}/restart"),
    ],
)
def test_another_users_job_is_404_exactly_like_an_unknown_one(alice, bob, alices_job, method, path):
    theirs = getattr(bob, method)(path.format(id=alices_job.id))
    unknown = getattr(bob, method)(path.format(id="00000000-0000-0000-0000-000000000000"))

    assert theirs.status_code == unknown.status_code == 404
    assert theirs.json().keys() == unknown.json().keys() == {"errors"}
    assert get_job(alices_job.id).status == "QUEUED"  # bob's cancel changed nothing


def test_a_client_cancels_and_restarts_its_own_job(alice, alices_job):
    assert alice.delete(f"/control/jobs?instanceId={alices_job.id}").status_code == 202
    assert alice.post(f"/control/jobs/{alices_job.id}/restart").status_code == 200


def test_an_operator_token_sees_and_cancels_every_job(django_user_model, alices_job):
    from django.contrib.auth.models import Permission

    service = django_user_model.objects.create_user("dashboard")  # not staff: granted the operate permission
    service.user_permissions.add(Permission.objects.get(codename="operate"))
    operator = with_token(token_for(service, ["control"]))

    assert [job["startedBy"] for job in operator.get("/control/jobs").json()["results"]] == ["alice"]
    assert operator.get(f"/control/jobs/{alices_job.id}").status_code == 200
    assert operator.delete(f"/control/jobs?instanceId={alices_job.id}").status_code == 202


def test_a_staff_users_token_without_the_control_scope_is_a_client(django_user_model, alices_job):
    staff = django_user_model.objects.create_user("staff", is_staff=True)
    assert with_token(token_for(staff, ["fhir:read"])).get(f"/control/jobs/{alices_job.id}").status_code == 404


def test_a_staff_session_is_an_operator(django_user_model, alices_job):
    session = APIClient()
    session.force_login(django_user_model.objects.create_user("ops", is_staff=True))
    assert session.get(f"/control/jobs/{alices_job.id}").status_code == 200


def test_clients_start_only_the_definitions_the_setting_allows(alice):
    body = {"jobDefinitionId": "DIAGNOSTIC_NOOP", "parameters": {"chunks": 1}}

    refused = alice.post("/control/jobs", body, format="json")
    assert refused.status_code == 403 and "BATCH_CLIENT_JOB_DEFINITIONS" in refused.json()["errors"][0]
    with override_settings(BATCH_CLIENT_JOB_DEFINITIONS=["DIAGNOSTIC_NOOP"]):
        started = alice.post("/control/jobs", body, format="json")
    assert started.status_code == 201 and started.json()["startedBy"] == "alice"


def test_an_operator_starts_any_definition(django_user_model):
    operator = with_token(token_for(django_user_model.objects.create_user("ops", is_staff=True)))
    response = operator.post("/control/jobs", {"jobDefinitionId": "DIAGNOSTIC_NOOP"}, format="json")
    assert response.status_code == 201


@pytest.mark.parametrize(
    "flag, expected", [("false", []), ("true", ["DIAGNOSTIC_NOOP", "DIAGNOSTIC_NOOP_GATED", "DIAGNOSTIC_SPIN"])]
)
def test_the_diagnostic_jobs_exist_only_when_the_setting_asks(flag, expected):
    probe = (
        "import django; django.setup(); from batch.registry import registry; "
        "print(sorted(i for i in registry.ids() if i.startswith('DIAGNOSTIC')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "BATCH_DIAGNOSTIC_JOBS": flag, "DJANGO_SETTINGS_MODULE": "heavylift.settings"},
    )
    assert result.stdout.strip() == str(expected), result.stderr[-2000:]
