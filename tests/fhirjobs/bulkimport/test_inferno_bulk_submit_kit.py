"""The Inferno Bulk Data kit's v4.0.0 Bulk Submit Data Consumer suite (`bulk_data_v400_submit_consumer`), ported
to pytest and run against a live Heavylift (gunicorn and a celery worker) as the Data Consumer.

The kit plays the Data Provider: it serves a SMART configuration, a token endpoint for SMART Backend Services
(the consumer signs a client assertion), a manifest and its files, and records what the consumer requests.
`provider.Provider` plays the same part on a local port. The kit's sequence (group `bulk_data_v400_submit_
consumer_sequence`), one test per group, in its order: submit a manifest with `oauthMetadataUrl`
(`bulk_data_v400_submit_consumer_submit`), `$bulk-submit-status` with `Prefer: respond-async`
(`…_status_submit`), poll (`…_poll`), submit `completed` (`…_submit_completed`), poll to the end
(`…_poll_complete`), and check what the consumer fetched (`…_manifest_file_retrieval`). Where the kit's files
send the access token without `Bearer ` (some of its groups do, others were fixed to send it), these tests
send `Bearer `. Beyond the kit: one running submission per submitter (429 and Retry-After), `stopped`, and
bad submissions answered with a 400 OperationOutcome.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission

from fhirstore.models import Resource
from jobsite.tokens import token_for
from tests.fhirjobs.bulkimport.provider import CLIENT_ID, Provider
from tests.fhirjobs.helpers import patient
from tests.fhirjobs.live import LiveServer, live_server

pytestmark = [pytest.mark.acceptance, pytest.mark.django_db(transaction=True)]

EVENT_STATUS = "http://hl7.org/fhir/event-status"  # the kit's Shared::SubmissionStatus::SYSTEM
SUBMITTER = {"system": "https://inferno.example/submitters", "value": "inferno"}  # Shared::SubmitterIdentifier
FHIR_INSTANT = re.compile(
    r"([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)-(0[1-9]|1[0-2])-(0[1-9]|[1-2][0-9]|3[0-1])"
    r"T([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?(Z|(\+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00))"
)


@pytest.fixture(scope="module")
def provider() -> Iterator[Provider]:
    served = Provider({f"Patient.{n}.ndjson": json.dumps(patient(f"submitted-{n}")) + "\n" for n in (1, 2)})
    yield served
    served.close()


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker, provider) -> Iterator[LiveServer]:
    yield from live_server(
        django_db_blocker,
        BULK_IMPORT_ALLOWED_SOURCES=f"{provider.base}/",
        BULK_SUBMIT_CLIENT_ID=CLIENT_ID,
        BULK_SUBMIT_CLIENT_JWK=json.dumps(provider.private_jwk),
    )


@pytest.fixture
def client(server) -> Iterator[httpx.Client]:
    """The provider's client of the consumer: a user who may import, its token scoped `system/bulk-submit`."""
    user = get_user_model().objects.create_user(f"provider-{uuid.uuid4().hex[:6]}")
    user.user_permissions.add(Permission.objects.get(codename="start_import"))
    token = token_for(user, ["system/bulk-submit"])
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}
    with httpx.Client(headers=headers, timeout=30) as http:
        yield http


def submit_parameters(submission_id: str, fhir_base_url: str, status=None, manifest_url=None, oauth=None) -> dict:
    """The kit's Consumer::Helpers `submit_parameters`."""
    parameter = [
        {"name": "submitter", "valueIdentifier": SUBMITTER},
        {"name": "submissionId", "valueString": submission_id},
        {"name": "fhirBaseUrl", "valueUrl": fhir_base_url},
    ]
    if status is not None:
        parameter.append({"name": "submissionStatus", "valueCoding": {"system": EVENT_STATUS, "code": status}})
    if manifest_url is not None:
        parameter.append({"name": "manifestUrl", "valueUrl": manifest_url})
    if oauth is not None:
        parameter.append({"name": "oauthMetadataUrl", "valueUrl": oauth})
    return {"resourceType": "Parameters", "parameter": parameter}


def status_parameters(submission_id: str) -> dict:
    """The kit's Consumer::Helpers `status_parameters`."""
    return {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "submitter", "valueIdentifier": SUBMITTER},
            {"name": "submissionId", "valueString": submission_id},
        ],
    }


def test_bulk_data_v400_submit_consumer_sequence_as_the_kit_runs_it(server, provider, client):
    submission_id = f"inferno-{uuid.uuid4().hex[:8]}"
    smart_discovery_url = f"{provider.base}/.well-known/smart-configuration"
    accept = {"Accept": "application/fhir+json"}

    # bulk_data_v400_submit_consumer_submit: the manifest, with the kit's `complete` status code
    submitted = client.post(
        f"{server.base}/$bulk-submit",
        json=submit_parameters(
            submission_id,
            provider.base,
            status="complete",
            manifest_url=f"{provider.base}/manifest.json",
            oauth=smart_discovery_url,
        ),
        headers=accept,
    )
    assert submitted.status_code == 200, submitted.text

    # bulk_data_v400_submit_consumer_status_submit: 202 and an absolute http(s) Content-Location
    status = client.post(
        f"{server.base}/$bulk-submit-status",
        json=status_parameters(submission_id),
        headers={**accept, "Prefer": "respond-async"},
    )
    assert status.status_code == 202, status.text
    poll_url = status.headers["Content-Location"]
    assert urlsplit(poll_url).scheme in ("http", "https") and urlsplit(poll_url).hostname

    # bulk_data_v400_submit_consumer_poll: 200 or 202
    assert client.get(poll_url).status_code in (200, 202)

    # bulk_data_v400_submit_consumer_submit_completed
    completed = client.post(
        f"{server.base}/$bulk-submit",
        json=submit_parameters(submission_id, provider.base, status="completed", oauth=smart_discovery_url),
        headers=accept,
    )
    assert completed.status_code == 200, completed.text

    # bulk_data_v400_submit_consumer_processing_wait: the kit waits for the tester; here, for the import
    deadline = time.monotonic() + 120
    while (done := client.get(poll_url, headers={"Accept": "application/json"})).status_code == 202:
        assert done.headers["X-Progress"] and int(done.headers["Retry-After"]) > 0
        assert time.monotonic() < deadline, "the submission did not end in 120 s"
        time.sleep(int(done.headers["Retry-After"]))

    # bulk_data_v400_submit_consumer_complete_poll_status
    assert done.status_code == 200, done.text
    assert done.headers["Content-Type"].split(";")[0].strip().lower() == "application/json"
    assert "X-Export-Status" not in done.headers
    # bulk_data_v400_submit_consumer_complete_poll_response
    manifest = done.json()
    assert isinstance(manifest, dict)
    assert manifest["submissionId"] == submission_id
    assert isinstance(manifest["transactionTime"], str) and FHIR_INSTANT.fullmatch(manifest["transactionTime"])
    assert manifest["requiresAccessToken"] in (True, False)

    # bulk_data_v400_submit_consumer_token_request, …_manifests_retrieved, …_files_retrieved
    assert provider.seen("POST", "/token")
    assert provider.seen("GET", "/manifest.json")
    assert {request.path for request in provider.seen("GET", "/files/")} == {
        "/files/Patient.1.ndjson",
        "/files/Patient.2.ndjson",
    }
    # beyond the kit: what the files held is in the store, and the manifest counts it
    assert set(Resource.objects.filter(resource_type="Patient").values_list("logical_id", flat=True)) == {
        "submitted-1",
        "submitted-2",
    }
    assert sum(item["count"] for item in manifest["output"]) == 2


def test_beyond_the_kit_a_second_submission_while_one_runs_is_429_then_stopped_lets_the_next_one_in(
    server, provider, client
):
    first, second = (f"s-{uuid.uuid4().hex[:8]}" for _ in range(2))
    assert client.post(f"{server.base}/$bulk-submit", json=submit_parameters(first, provider.base)).status_code == 200

    busy = client.post(f"{server.base}/$bulk-submit", json=submit_parameters(second, provider.base))

    assert busy.status_code == 429 and int(busy.headers["Retry-After"]) > 0
    assert busy.json()["resourceType"] == "OperationOutcome"
    stopped = client.post(f"{server.base}/$bulk-submit", json=submit_parameters(first, provider.base, "stopped"))
    assert stopped.status_code == 200, stopped.text
    assert client.post(f"{server.base}/$bulk-submit", json=submit_parameters(second, provider.base)).status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        {"resourceType": "Patient"},
        {"resourceType": "Parameters", "parameter": "nonsense"},
        submit_parameters("x", "https://p.example", status="finished"),
        {"resourceType": "Parameters", "parameter": [{"name": "submissionId", "valueString": "x"}]},
    ],
)
def test_beyond_the_kit_a_bad_submission_is_a_400_operation_outcome_never_a_500(server, client, body):
    response = client.post(f"{server.base}/$bulk-submit", json=body)

    assert response.status_code == 400, response.text
    assert response.json()["resourceType"] == "OperationOutcome"
