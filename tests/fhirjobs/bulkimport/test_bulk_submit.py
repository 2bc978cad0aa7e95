"""`$bulk-submit` as the Bulk Data STU4 ballot has it: submission status Codings, one running submission per
submitter (429), status polling by a Content-Location, the `system/bulk-submit` scope, and a token fetched by
client credentials from the provider's `oauthMetadataUrl`."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from django.contrib.auth.models import Permission

from batch.models import JobInstance
from batch.statuses import JobStatus
from fhirjobs.bulkimport.models import BulkSubmission
from fhirstore.models import Resource
from jobsite.tokens import token_for
from tests.fhirjobs.bulkimport.helpers import write_ndjson
from tests.fhirjobs.bulkimport.provider import CLIENT_ID, CLIENT_SECRET, Provider
from tests.fhirjobs.helpers import patient
from tests.fhirstore.helpers import FhirClient, assert_outcome

pytestmark = pytest.mark.django_db(transaction=True)

SUBMITTER = {"name": "submitter", "valueIdentifier": {"system": "https://example.org/providers", "value": "a"}}
EVENT_STATUS = "http://hl7.org/fhir/event-status"


def parameters(submission_id: str, *more: dict) -> dict:
    return {
        "resourceType": "Parameters",
        "parameter": [SUBMITTER, {"name": "submissionId", "valueString": submission_id}, *more],
    }


def status(code: str, system: str | None = EVENT_STATUS) -> dict:
    return {"name": "submissionStatus", "valueCoding": {**({"system": system} if system else {}), "code": code}}


def manifest_url(url: str) -> dict:
    return {"name": "manifestUrl", "valueUrl": url}


@pytest.fixture
def provider_client(django_user_model) -> FhirClient:
    user = django_user_model.objects.create_user("provider")
    user.user_permissions.add(Permission.objects.get(codename="start_import"))
    return FhirClient(f"Bearer {token_for(user, ['system/bulk-submit'])}")


@pytest.fixture
def local_manifest(file_root) -> str:
    """A manifest of one Patient file, both as file:// URLs."""
    ndjson = write_ndjson(file_root / "Patient.ndjson", patient("sub-1"))
    manifest = file_root / "manifest.json"
    manifest.write_text(json.dumps({"output": [{"type": "Patient", "url": ndjson.as_uri()}]}))
    return manifest.as_uri()


@pytest.fixture
def provider(settings) -> Iterator[Provider]:
    served = Provider({"Patient.ndjson": json.dumps(patient("from-provider")) + "\n"})
    settings.BULK_IMPORT_ALLOWED_SOURCES = [f"{served.base}/"]
    settings.BULK_SUBMIT_CLIENT_ID = CLIENT_ID
    yield served
    served.close()


def test_a_token_with_only_the_system_bulk_submit_scope_may_submit(provider_client, local_manifest, bus):
    response = provider_client.post(
        "/fhir/$bulk-submit", parameters("s1", manifest_url(local_manifest), status("completed"))
    )

    assert response.status_code == 200, response.content
    bus.drain()
    assert Resource.objects.filter(resource_type="Patient", logical_id="sub-1").exists()


def test_a_token_without_import_or_system_bulk_submit_is_403(django_user_model):
    user = django_user_model.objects.create_user("reader", is_staff=True)
    client = FhirClient(f"Bearer {token_for(user, ['fhir:read'])}")

    response = client.post("/fhir/$bulk-submit", parameters("s1"))

    assert_outcome(response, 403, "lacks the 'import' or 'system/bulk-submit' scope")


@pytest.mark.parametrize("code", ["completed", "complete"])
def test_completed_closes_the_submission_in_the_ballot_coding_or_as_pathling_and_inferno_send_it(provider_client, code):
    response = provider_client.post("/fhir/$bulk-submit", parameters("s1", status(code)))

    assert response.status_code == 200, response.content
    assert BulkSubmission.objects.get().status == "completed"


@pytest.mark.parametrize(
    "extra, text",
    [
        (status("finished"), "submissionStatus 'finished' is not one of in-progress, completed, stopped"),
        (status("completed", "http://example.org/mine"), "is not http://hl7.org/fhir/event-status"),
        ({"name": "submissionStatus", "valueCoding": {"code": {"a": 1}}}, "submissionStatus {'a': 1} is not one"),
        ({"name": "fileEncryptionKey", "valueString": "{}"}, "fileEncryptionKey needs a value: the JWE that delivers"),
        ({"name": "outputFormat", "valueString": "text/csv"}, "outputFormat 'text/csv' is not supported"),
        ({"name": "fhirBaseUrl", "valueUrl": "not a url"}, "fhirBaseUrl 'not a url' is not an http(s) URL"),
        ({"name": "oauthMetadataUrl", "valueUrl": "ftp://x"}, "oauthMetadataUrl 'ftp://x' is not an http(s) URL"),
        ({"name": "oauthMetadataUrl", "valueUrl": "https://elsewhere.example/"}, "not under an allowed import source"),
    ],
)
def test_what_the_server_cannot_honour_is_a_400_operation_outcome(provider_client, extra, text):
    assert_outcome(provider_client.post("/fhir/$bulk-submit", parameters("s1", extra)), 400, text)
    assert not BulkSubmission.objects.exists()


def test_a_second_submission_of_a_submitter_while_one_runs_is_429_with_retry_after(provider_client, settings):
    settings.BULK_SUBMIT_RETRY_AFTER_SECONDS = 17
    assert provider_client.post("/fhir/$bulk-submit", parameters("first")).status_code == 200

    busy = provider_client.post("/fhir/$bulk-submit", parameters("second"))

    assert_outcome(busy, 429, "Submission first of https://example.org/providers|a is still running")
    assert busy["Retry-After"] == "17"
    assert provider_client.post("/fhir/$bulk-submit", parameters("first", status("completed"))).status_code == 200
    assert provider_client.post("/fhir/$bulk-submit", parameters("second")).status_code == 200


def test_an_ended_submission_takes_no_manifest_and_is_not_reopened(provider_client, local_manifest):
    provider_client.post("/fhir/$bulk-submit", parameters("s1", status("completed")))

    assert_outcome(
        provider_client.post("/fhir/$bulk-submit", parameters("s1", manifest_url(local_manifest))),
        400,
        "is completed: it takes no more manifests",
    )
    assert_outcome(provider_client.post("/fhir/$bulk-submit", parameters("s1", status("in-progress"))), 400)


def test_stopped_cancels_the_imports_of_the_submission(provider_client, local_manifest, bus):
    provider_client.post("/fhir/$bulk-submit", parameters("s1", manifest_url(local_manifest)))

    response = provider_client.post("/fhir/$bulk-submit", parameters("s1", status("stopped")))

    assert response.status_code == 200, response.content
    assert BulkSubmission.objects.get().status == "stopped"
    assert JobInstance.objects.get(definition_id="BULK_IMPORT").status == JobStatus.CANCELLED


def test_status_with_respond_async_is_202_and_a_status_url_that_answers_the_status_manifest(
    provider_client, local_manifest, bus, django_user_model
):
    provider_client.post("/fhir/$bulk-submit", parameters("s1", manifest_url(local_manifest)))
    kicked = provider_client.post("/fhir/$bulk-submit-status", parameters("s1"), HTTP_PREFER="respond-async")
    assert kicked.status_code == 202, kicked.content
    poll_url = kicked["Content-Location"]
    assert poll_url.startswith("http://testserver/fhir/$bulk-submit-poll-status?_jobId=")

    open_submission = provider_client.get(poll_url)
    assert open_submission.status_code == 202 and open_submission["X-Progress"].endswith("the submission is open")
    provider_client.post("/fhir/$bulk-submit", parameters("s1", status("completed")))
    bus.drain()
    done = provider_client.get(poll_url)

    assert done.status_code == 200, done.content
    assert done["Content-Type"] == "application/json"
    manifest = done.json()
    assert manifest["submissionId"] == "s1" and manifest["requiresAccessToken"] is True
    assert manifest["transactionTime"].endswith("+00:00")
    assert manifest["output"] == [{"type": "Patient", "manifestUrl": local_manifest, "count": 1}]
    someone_else = FhirClient(f"Bearer {token_for(django_user_model.objects.create_user('x', is_staff=True))}")
    assert_outcome(someone_else.get(poll_url), 404)
    assert_outcome(provider_client.get("/fhir/$bulk-submit-poll-status?_jobId=nonsense"), 404)


def test_with_post_only_the_status_manifest_has_outcome_instead_of_error(provider_client, settings):
    settings.BULK_EXPORT_KICKOFF = "post-only"
    provider_client.post("/fhir/$bulk-submit", parameters("s1", status("completed")))

    manifest = provider_client.post("/fhir/$bulk-submit-status", parameters("s1")).json()

    assert manifest["outcome"] == [] and "error" not in manifest
    assert manifest["manifestType"] == "http://hl7.org/fhir/uv/bulkdata/StructureDefinition/BulkSubmitStatusManifest"


def test_oauth_metadata_url_a_smart_configuration_and_a_signed_assertion_get_the_token_files_are_fetched_with(
    provider_client, provider, settings, bus
):
    settings.BULK_SUBMIT_CLIENT_JWK = provider.private_jwk
    submitted = provider_client.post(
        "/fhir/$bulk-submit",
        parameters(
            "s1",
            manifest_url(f"{provider.base}/manifest.json"),
            {"name": "oauthMetadataUrl", "valueUrl": f"{provider.base}/.well-known/smart-configuration"},
            {"name": "fhirBaseUrl", "valueUrl": provider.base},
            status("completed"),
        ),
    )
    assert submitted.status_code == 200, submitted.content
    bus.drain()

    [token_request] = provider.seen("POST", "/token")
    assert token_request.form["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    assert token_request.form["scope"] == "system/*.rs"
    fetches = provider.seen("GET", "/manifest.json") + provider.seen("GET", "/files/")
    assert [request.path for request in fetches] == ["/manifest.json", "/files/Patient.ndjson"]
    assert all(request.authorization.removeprefix("Bearer ") in provider.tokens for request in fetches)
    assert Resource.objects.filter(resource_type="Patient", logical_id="from-provider").exists()


def test_oauth_metadata_url_rfc_9728_metadata_leads_to_the_authorization_server_and_basic_auth_works_too(
    provider_client, provider, settings, bus
):
    settings.BULK_SUBMIT_CLIENT_SECRET = CLIENT_SECRET
    submitted = provider_client.post(
        "/fhir/$bulk-submit",
        parameters(
            "s1",
            manifest_url(f"{provider.base}/manifest.json"),
            {"name": "oauthMetadataUrl", "valueUrl": f"{provider.base}/.well-known/oauth-protected-resource"},
            status("completed"),
        ),
    )
    assert submitted.status_code == 200, submitted.content
    bus.drain()

    assert [request.path for request in provider.seen("GET", "/.well-known/")] == [
        "/.well-known/oauth-protected-resource",
        "/.well-known/oauth-authorization-server/as",
    ]
    assert Resource.objects.filter(resource_type="Patient", logical_id="from-provider").exists()


def test_oauth_metadata_url_without_a_configured_client_or_with_a_refused_one_is_a_400_and_starts_nothing(
    provider_client, provider, settings
):
    request = parameters(
        "s1",
        manifest_url(f"{provider.base}/manifest.json"),
        {"name": "oauthMetadataUrl", "valueUrl": f"{provider.base}/.well-known/smart-configuration"},
    )
    assert_outcome(provider_client.post("/fhir/$bulk-submit", request), 400, "BULK_SUBMIT_CLIENT_ID")

    settings.BULK_SUBMIT_CLIENT_SECRET = "wrong"
    assert_outcome(provider_client.post("/fhir/$bulk-submit", request), 400, "the token endpoint could not be read")
    assert not BulkSubmission.objects.exists() and not JobInstance.objects.exists()


def test_a_paged_manifest_is_followed_by_its_next_links(provider_client, file_root, bus):
    first = write_ndjson(file_root / "a.ndjson", patient("page-1"))
    second = write_ndjson(file_root / "b.ndjson", patient("page-2"))
    page_2 = file_root / "manifest-2.json"
    page_2.write_text(json.dumps({"output": [{"type": "Patient", "url": second.as_uri()}]}))
    page_1 = file_root / "manifest-1.json"
    page_1.write_text(
        json.dumps(
            {
                "output": [{"type": "Patient", "url": first.as_uri()}],
                "link": [{"relation": "next", "url": page_2.as_uri()}],
            }
        )
    )

    provider_client.post("/fhir/$bulk-submit", parameters("s1", manifest_url(page_1.as_uri()), status("completed")))
    bus.drain()

    assert set(Resource.objects.values_list("logical_id", flat=True)) == {"page-1", "page-2"}
