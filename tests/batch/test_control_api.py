"""The control API at /control/jobs: camelCase JSON, every problem listed, and nothing without credentials."""

from dataclasses import replace

import pytest
from rest_framework.test import APIClient

from batch.control import start_job
from batch.models import JobInstance
from batch.statuses import JobStatus
from jobsite.tokens import token_for
from tests.batch.factories import JobInstanceFactory, WorkChunkFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def no_broker(bus):
    """Starting a job announces its first chunk; these tests look at the API, not at Redis."""


@pytest.fixture
def api(django_user_model) -> APIClient:
    """An operator's client sending an API token the way FHIR clients do: `Authorization: Bearer <token>`.
    (What a client that is no operator may do: test_control_permissions.py.)"""
    user = django_user_model.objects.create_user("operator", is_staff=True)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token_for(user)}")
    return client


def test_start_returns_201_with_the_instance_in_camel_case(api):
    response = api.post(
        "/control/jobs", {"jobDefinitionId": "DIAGNOSTIC_NOOP", "parameters": {"chunks": 3}}, format="json"
    )

    assert response.status_code == 201
    body = response.json()
    assert body["jobDefinitionId"] == "DIAGNOSTIC_NOOP" and body["status"] == "QUEUED"
    assert body["parameters"] == {"chunks": 3, "sleep_ms": 0, "records_per_chunk": 1, "hang_at_chunk": -1}
    assert body["startedBy"] == "operator"
    assert JobInstance.objects.filter(id=body["instanceId"]).exists()
    assert {
        "combinedRecordsProcessed",
        "recordsPerSecond",
        "estimatedTimeRemaining",
        "errorCount",
        "errorMessage",
        "progress",
        "createTime",
        "startTime",
        "endTime",
    } <= set(body)


def test_invalid_parameters_are_400_listing_every_problem_and_nothing_is_written(api):
    response = api.post(
        "/control/jobs",
        {"jobDefinitionId": "DIAGNOSTIC_NOOP", "parameters": {"chunks": "many", "sleep_ms": -5, "colour": "red"}},
        format="json",
    )

    assert response.status_code == 400
    assert sorted(response.json()["errors"]) == sorted(
        [
            "unknown parameter 'colour'",
            "'chunks' must be an integer, got 'many'",
            "'sleep_ms' must be at least 0, got -5",
        ]
    )
    assert not JobInstance.objects.exists()


@pytest.mark.parametrize(
    "body, problem",
    [
        ({}, "jobDefinitionId: This field is required."),
        (
            {"jobDefinitionId": "NOPE"},
            "unknown job definition 'NOPE'; known: BULK_EXPORT, BULK_IMPORT, BULK_PATCH, BULK_SUBMIT_UNDO, DELETE_EXPUNGE, ",
        ),
        (
            {"jobDefinitionId": "DIAGNOSTIC_NOOP", "maxConcurrentChunks": 0},
            "maxConcurrentChunks: Ensure this value is greater than or equal to 1.",
        ),
    ],
)
def test_a_bad_start_request_is_400_saying_why(api, body, problem):
    response = api.post("/control/jobs", body, format="json")

    assert response.status_code == 400
    [error] = response.json()["errors"]
    assert error.startswith(problem)


def test_list_filters_by_one_or_several_statuses_and_pages(api):
    for status in (JobStatus.QUEUED, JobStatus.IN_PROGRESS, JobStatus.IN_PROGRESS, JobStatus.COMPLETED):
        JobInstanceFactory(status=status)

    running = api.get("/control/jobs?jobStatus=IN_PROGRESS").json()
    several = api.get("/control/jobs?jobStatus=IN_PROGRESS&jobStatus=QUEUED&pageSize=2").json()
    everything = api.get("/control/jobs").json()

    assert running["count"] == 2 and {job["status"] for job in running["results"]} == {"IN_PROGRESS"}
    assert several["count"] == 3 and len(several["results"]) == 2 and several["next"]
    assert everything["count"] == 4


def test_an_unknown_status_filter_is_400(api):
    response = api.get("/control/jobs?jobStatus=SLEEPING")
    assert response.status_code == 400
    assert response.json()["errors"][0].startswith("unknown jobStatus 'SLEEPING'")


def test_one_instance_shows_its_chunk_counts_per_step_and_status(api):
    instance = JobInstanceFactory()
    WorkChunkFactory(instance=instance, target_step_id="generate-chunks", status="COMPLETED")
    WorkChunkFactory.create_batch(2, instance=instance, target_step_id="sleep", status="COMPLETED")
    WorkChunkFactory(instance=instance, target_step_id="sleep", status="QUEUED")

    body = api.get(f"/control/jobs/{instance.id}").json()

    assert body["instanceId"] == str(instance.id)
    assert body["steps"] == [
        {"stepId": "generate-chunks", "chunks": {"COMPLETED": 1}},
        {"stepId": "sleep", "chunks": {"COMPLETED": 2, "QUEUED": 1}},
    ]


def test_an_unknown_instance_is_404(api):
    assert api.get("/control/jobs/00000000-0000-0000-0000-000000000000").status_code == 404
    assert api.get("/control/jobs/not-an-id").status_code == 404


def test_delete_cancels_202_unknown_404_ended_409_with_the_reason(api):
    running = JobInstanceFactory(status=JobStatus.IN_PROGRESS, current_gated_step_id="sleep")
    ended = JobInstanceFactory(status=JobStatus.COMPLETED)

    cancelled = api.delete(f"/control/jobs?instanceId={running.id}")
    unknown = api.delete("/control/jobs?instanceId=00000000-0000-0000-0000-000000000000")
    conflict = api.delete(f"/control/jobs?instanceId={ended.id}")
    missing = api.delete("/control/jobs")

    assert (cancelled.status_code, cancelled.json()["status"]) == (202, "CANCELLED")
    assert unknown.status_code == 404
    assert conflict.status_code == 409
    assert conflict.json() == {"errors": [f"job {ended.id} has already ended: it is COMPLETED"]}
    assert missing.status_code == 400


def test_restart_resumes_a_failed_job_and_refuses_a_running_one(api):
    instance = start_job("DIAGNOSTIC_NOOP", {"chunks": 1})
    JobInstance.objects.filter(id=instance.id).update(status=JobStatus.FAILED)

    restarted = api.post(f"/control/jobs/{instance.id}/restart")
    again = api.post(f"/control/jobs/{instance.id}/restart")

    assert (restarted.status_code, restarted.json()["status"]) == (200, "IN_PROGRESS")
    assert again.status_code == 409


def test_the_token_is_also_accepted_with_the_token_keyword(django_user_model):
    user = django_user_model.objects.create_user("script")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token_for(user)}")
    assert client.get("/control/jobs").status_code == 200


@pytest.mark.parametrize(
    "method, path",
    [
        ("get", "/control/jobs"),
        ("post", "/control/jobs"),
        ("delete", "/control/jobs?instanceId=x"),
        ("post", "/control/jobs/x/restart"),
        ("get", "/control/jobs/x"),
    ],
)
def test_without_credentials_every_endpoint_is_401(method, path):
    response = getattr(APIClient(), method)(path)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"


def test_a_wrong_token_is_401():
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer not-a-token")
    assert client.get("/control/jobs").status_code == 401


def test_a_session_needs_a_staff_user(django_user_model):
    client = APIClient()
    client.force_login(django_user_model.objects.create_user("visitor", password="x"))
    assert client.get("/control/jobs").status_code == 403

    client.force_login(django_user_model.objects.create_user("operator", password="x", is_staff=True))
    assert client.get("/control/jobs").status_code == 200


@pytest.mark.django_db(transaction=True)  # chunks are announced on commit
def test_one_instance_shows_the_workers_its_chunks_ran_on_host_by_host(api, bus):
    """Each chunk keeps the worker that claimed it (Celery hostname/pid): a job spread over hosts shows it."""
    job = start_job("DIAGNOSTIC_NOOP", {"chunks": 4})
    bus.worker = "celery@host-a/101"
    bus.deliver_next()  # the first step, which makes the 4 chunks
    announced = [(message, chunk_id) for message in bus.take() for chunk_id in message.chunk_ids]
    assert len(announced) == 4
    for number, (message, chunk_id) in enumerate(announced):  # one chunk per delivery, as on 4 busy workers
        bus.worker = "celery@host-a/101" if number < 1 else "celery@host-b/202"
        bus.deliver(replace(message, chunk_id=chunk_id, following_chunk_ids=()))
    bus.drain()

    workers = api.get(f"/control/jobs/{job.id}").json()["workers"]

    assert [(w["worker"], w["host"]) for w in workers] == [
        ("celery@host-a/101", "host-a"),
        ("celery@host-b/202", "host-b"),
    ]
    assert [w["chunks"] for w in workers] == [{"COMPLETED": 2}, {"COMPLETED": 3}]
    assert all(w["lastUpdate"] for w in workers)
