"""The Inferno Bulk Data test kit's server checks, ported to pytest and run against a live Heavylift.

The kit (github inferno-framework/bulk-data-test-kit, read at its main branch, release 0.13.0) is Ruby and
cannot run here, so each of its checks is repeated request for request against a real gunicorn and a real
celery worker, and each test names the kit's test id it ports (`bulk_data_…`, from the kit's `id :…` lines):
the v1.0.1 and v2.0.0 server suites (`lib/bulk_data_test_kit/v1.0.1`, `v2.0.0`, and the shared
`export_*_tests.rb`, `bulk_export_validation_tester.rb` they include) for `$export`, and the v4.0.0 Bulk Submit
Data Consumer suite (`bulk_data_v400_submit_consumer`) for `$bulk-submit` (`test_inferno_bulk_submit_kit.py`).

What the kit checks, as it checks it: the kick-off is a GET with `Accept: application/fhir+json` and
`Prefer: respond-async`; the status URL is polled with `Accept: application/json`, waiting `Retry-After`
seconds; files are downloaded with `Accept: application/fhir+ndjson`. The kit leaves some of the IG's rules
unchecked (bad `_outputFormat`/`_type`/`_since` answered with a 4xx OperationOutcome, `_type`, `_typeFilter`
and `_since` actually narrowing the files, `X-Progress`); the tests marked "beyond the kit" check those the
same way, on the same live server.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from django.contrib.auth import get_user_model

from jobsite.tokens import token_for
from tests.fhirjobs.bulkexport.helpers import observation
from tests.fhirjobs.helpers import patient
from tests.fhirjobs.live import LiveServer, live_server
from tests.fhirstore.helpers import store

pytestmark = [pytest.mark.acceptance, pytest.mark.django_db(transaction=True)]

# The kit's instant pattern (export_parameters_tests.rb, FHIR R4's `instant`).
FHIR_INSTANT = re.compile(
    r"([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)-(0[1-9]|1[0-2])-(0[1-9]|[1-2][0-9]|3[0-1])"
    r"T([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?(Z|(\+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00))"
)
KICK_OFF_HEADERS = {"Accept": "application/fhir+json", "Prefer": "respond-async"}  # export_kick_off_performer.rb
STATUS_TIMEOUT = 180  # the kit's default bulk_timeout
# Fixed, so every pytest-xdist process collects the same test ids.
UNKNOWN_JOB = "9aa4df71-2ab9-4cb2-a742-fa1a10e52504"
UNKNOWN_FILE = "df5dc2a8-799e-41a9-800d-bb96918c2325"


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker) -> Iterator[LiveServer]:
    yield from live_server(django_db_blocker)


@pytest.fixture
def token(server) -> str:
    return token_for(get_user_model().objects.create_user(f"inferno-{uuid.uuid4().hex[:6]}"))


@pytest.fixture
def client(token) -> Iterator[httpx.Client]:
    with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
        yield http


@pytest.fixture
def anonymous() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as http:
        yield http


@pytest.fixture(autouse=True)
def data() -> None:
    """Three patients (the kit wants at least two in the Patient file), an Observation each, a Group of two."""
    old = datetime.now(UTC) - timedelta(days=30)
    store(patient("pat-a"), patient("pat-b"), observation("obs-a", "pat-a"), observation("obs-b", "pat-b"), at=old)
    store(patient("pat-c"), observation("obs-c", "pat-c", category="vital-signs"))
    store(
        {
            "resourceType": "Group",
            "id": "grp",
            "type": "person",
            "actual": True,
            "member": [{"entity": {"reference": "Patient/pat-a"}}, {"entity": {"reference": "Patient/pat-b"}}],
        }
    )


def kick_off(http: httpx.Client, url: str, **params: str) -> httpx.Response:
    """export_kick_off_performer.rb `perform_export_kick_off_request`: a GET with the kit's headers."""
    return http.get(url, params=params, headers=KICK_OFF_HEADERS)


def poll(http: httpx.Client, status_url: str) -> tuple[httpx.Response, list[httpx.Response]]:
    """export_operation_tests.rb `export_status_check_success`: poll, sleeping `Retry-After` (doubling without
    it) until the answer is not 202; the final answer and the 202s before it."""
    waits, wait, start = [], 1, time.monotonic()
    while True:
        response = http.get(status_url, headers={"Accept": "application/json"})
        if response.status_code != 202:
            return response, waits
        waits.append(response)
        retry_after = int(response.headers.get("Retry-After", "0") or 0)
        wait = retry_after if retry_after > 0 else wait * 2
        assert time.monotonic() - start + wait <= STATUS_TIMEOUT, "the export did not end within the kit's timeout"
        time.sleep(wait)


def export(http: httpx.Client, url: str, **params: str) -> dict:
    kicked = kick_off(http, url, **params)
    assert kicked.status_code == 202, kicked.text
    response, _ = poll(http, kicked.headers["Content-Location"])
    assert response.status_code == 200, response.text
    return response.json()


def download(http: httpx.Client, entry: dict) -> list[dict]:
    """bulk_export_validation_tester.rb `check_file_request`: `Accept: application/fhir+ndjson`, the type
    `application/fhir+ndjson`, every line a resource of the entry's type."""
    response = http.get(entry["url"], headers={"Accept": "application/fhir+ndjson"}, follow_redirects=True)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("application/fhir+ndjson")
    resources = [json.loads(line) for line in response.text.splitlines() if line.strip()]
    assert all(resource["resourceType"] == entry["type"] and resource.get("id") for resource in resources)
    return resources


def ids_by_type(http: httpx.Client, manifest: dict) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for entry in manifest["output"]:
        found.setdefault(entry["type"], set()).update(resource["id"] for resource in download(http, entry))
    return found


def assert_operation_outcome(response: httpx.Response, *statuses: int) -> dict:
    """export_cancel_tests.rb `perform_cancelled_polling_test`: the status and a JSON OperationOutcome."""
    assert response.status_code in statuses, (response.status_code, response.text)
    body = response.json()
    assert body["resourceType"] == "OperationOutcome" and body["issue"], body
    return body


# --- Capability -----------------------------------------------------------------------------------


def test_bulk_data_export_operation_support_metadata_instantiates_bulk_data_and_lists_the_export_operations(
    server, client
):
    """bulk_data_export_operation_support, bulk_data_patient_export_operation_support,
    bulk_data_group_export_operation_support (export_operation_tests.rb `check_export_support`)."""
    response = client.get(f"{server.base}/metadata")

    assert response.status_code in (200, 201)
    statement = response.json()
    assert any(
        re.match(r"^http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data(\|\S+)?$", canonical)
        for canonical in statement["instantiates"]
    )
    [rest] = statement["rest"]
    by_type = {resource["type"]: resource for resource in rest["resource"]}
    definitions = {
        "system": {op["name"]: op["definition"] for op in rest["operation"]},
        "Patient": {op["name"]: op["definition"] for op in by_type["Patient"]["operation"]},
        "Group": {op["name"]: op["definition"] for op in by_type["Group"]["operation"]},
    }
    for level, name in (("system", "export"), ("Patient", "patient-export"), ("Group", "group-export")):
        assert re.match(
            rf"^http://hl7.org/fhir/uv/bulkdata/OperationDefinition/{name}(\|\S+)?$", definitions[level]["export"]
        ), (level, definitions[level])


# --- Kick-off -------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["$export", "Patient/$export", "Group/grp/$export"])
def test_bulk_data_no_auth_reject_a_kick_off_without_a_token_is_400_or_401(server, anonymous, path):
    """bulk_data_no_auth_reject, bulk_data_patient_no_auth_reject, bulk_data_group_no_auth_reject
    (export_operation_tests.rb `rejects_without_authorization`)."""
    assert kick_off(anonymous, f"{server.base}/{path}").status_code in (400, 401)


@pytest.mark.parametrize("path", ["$export", "Patient/$export", "Group/grp/$export"])
def test_bulk_data_kick_off_answers_202_with_a_content_location(server, client, path):
    """bulk_data_kick_off, bulk_data_patient_kick_off, bulk_data_group_kick_off (`export_kick_off_success`)."""
    response = kick_off(client, f"{server.base}/{path}")

    assert response.status_code == 202, response.text
    assert response.headers["Content-Location"].startswith(f"{server.base}/$export-poll-status?_jobId=")


@pytest.mark.parametrize("output_format", ["application/fhir+ndjson", "application/ndjson", "ndjson"])
@pytest.mark.parametrize("path", ["$export", "Patient/$export", "Group/grp/$export"])
def test_output_format_in_export_response_each_ndjson_variant_is_accepted_and_deleted(
    server, client, path, output_format
):
    """output_format_in_export_response, output_format_in_group_export_response (v2.0.0;
    export_parameters_tests.rb `perform_outputFormat_param_test`: 202, then DELETE → 202)."""
    kicked = kick_off(client, f"{server.base}/{path}", _outputFormat=output_format)

    assert kicked.status_code == 202, kicked.text
    deleted = client.delete(kicked.headers["Content-Location"], headers={"Accept": "application/json"})
    assert deleted.status_code == 202, deleted.text


@pytest.mark.parametrize("path", ["$export", "Patient/$export", "Group/grp/$export"])
def test_since_in_export_response_a_valid_instant_is_accepted_and_deleted(server, client, path):
    """since_in_export_response, since_in_group_export_response (v2.0.0; `perform_since_param_test`)."""
    since = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "+00:00"
    assert FHIR_INSTANT.fullmatch(since)

    kicked = kick_off(client, f"{server.base}/{path}", _since=since)

    assert kicked.status_code == 202, kicked.text
    assert client.delete(kicked.headers["Content-Location"]).status_code == 202


@pytest.mark.parametrize(
    "params, text",
    [
        ({"_outputFormat": "text/csv"}, "_outputFormat 'text/csv' is not supported"),
        ({"_outputFormat": "application/fhir+json"}, "is not supported"),
        ({"_type": "Patient,NotAType"}, "'NotAType' is not a resource type"),
        ({"_since": "yesterday"}, "is not a FHIR instant"),
        ({"_since": "2024-02-30T00:00:00Z"}, "is not a FHIR instant"),
        ({"_until": "2020-01-01T00:00:00Z", "_since": "2021-01-01T00:00:00Z"}, "_until"),
        ({"_typeFilter": "Observation?no-such-param=1"}, "no-such-param"),
    ],
)
def test_beyond_the_kit_bad_kick_off_parameters_are_a_400_operation_outcome_never_a_500(server, client, params, text):
    """The IG's "respond with a 4xx and an OperationOutcome" for what the server cannot honour; the kit does
    not send bad parameters."""
    body = assert_operation_outcome(kick_off(client, f"{server.base}/$export", **params), 400)

    assert text in " ".join(issue.get("diagnostics", "") for issue in body["issue"])


def test_beyond_the_kit_a_kick_off_without_prefer_respond_async_is_a_400_operation_outcome(server, client):
    response = client.get(f"{server.base}/$export", headers={"Accept": "application/fhir+json"})

    assert_operation_outcome(response, 400)


# --- Status and manifest --------------------------------------------------------------------------


def test_bulk_data_status_check_polls_until_200_with_the_manifest_fields(server, client):
    """bulk_data_status_check, bulk_data_patient_status_check, bulk_data_group_status_check
    (`export_status_check_success`): 202s honouring Retry-After, then 200, `application/json`, and
    transactionTime, request, requiresAccessToken, output, error. Beyond the kit: every 202 has X-Progress
    and an integer Retry-After, and transactionTime is a FHIR instant."""
    kicked = kick_off(client, f"{server.base}/$export")

    response, waits = poll(client, kicked.headers["Content-Location"])

    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    manifest = response.json()
    for key in ("transactionTime", "request", "requiresAccessToken", "output", "error"):
        assert key in manifest, key
    assert FHIR_INSTANT.fullmatch(manifest["transactionTime"])
    assert manifest["requiresAccessToken"] is True
    assert manifest["request"].startswith(f"{server.base}/$export")
    for waiting in waits:
        assert waiting.headers["X-Progress"] and int(waiting.headers["Retry-After"]) > 0


@pytest.mark.parametrize("path", ["$export", "Patient/$export", "Group/grp/$export"])
def test_bulk_data_output_check_every_output_has_a_type_and_an_absolute_url(server, client, path):
    """bulk_data_output_check, bulk_data_patient_output_check, bulk_data_group_output_check
    (`check_bulk_data_output`, with the option `require_absolute_urls_in_output`); beyond the kit: `count`."""
    manifest = export(client, f"{server.base}/{path}")

    assert manifest["output"]
    for entry in manifest["output"]:
        assert {"type", "url"} <= set(entry)
        assert re.match(r"\Ahttps?://", entry["url"])
        assert isinstance(entry["count"], int) and entry["count"] > 0


def test_bulk_data_ndjson_download_and_valid_resources_every_file_is_fhir_ndjson_of_its_type(server, client):
    """bulk_data_ndjson_download and bulk_data_valid_resources (`perform_bulk_export_validation`,
    `check_file_request`), system level; the lines are the store's resources, each once."""
    manifest = export(client, f"{server.base}/$export")

    assert ids_by_type(client, manifest) == {
        "Patient": {"pat-a", "pat-b", "pat-c"},
        "Observation": {"obs-a", "obs-b", "obs-c"},
        "Group": {"grp"},
    }
    for entry in manifest["output"]:
        assert len(download(client, entry)) == entry["count"]


def test_bulk_data_ndjson_download_requires_the_access_token_when_the_manifest_says_so(server, client, anonymous):
    """bulk_data_ndjson_download's `ndjson_download_requiresAccessToken_check`: with requiresAccessToken true,
    a download without the token is 400 or 401."""
    manifest = export(client, f"{server.base}/$export")

    assert manifest["requiresAccessToken"] is True
    for entry in manifest["output"]:
        response = anonymous.get(entry["url"], headers={"Accept": "application/fhir+ndjson"})
        assert response.status_code in (400, 401)


def test_bulk_data_multiple_patients_the_patient_file_has_at_least_two(server, client):
    """bulk_data_multiple_patients, bulk_data_patient_multiple_patients (`export_multiple_patients_check`)."""
    manifest = export(client, f"{server.base}/Patient/$export")

    assert len(ids_by_type(client, manifest)["Patient"]) >= 2


def test_bulk_data_group_matching_patient_ids_the_group_export_holds_its_members(server, client):
    """bulk_data_group_matching_patient_ids: the Patients of a Group export are the Group's members."""
    manifest = export(client, f"{server.base}/Group/grp/$export")

    found = ids_by_type(client, manifest)
    assert found["Patient"] == {"pat-a", "pat-b"}
    assert found["Observation"] == {"obs-a", "obs-b"}


# --- Parameters that narrow the files (beyond the kit, which only checks the 202) ---------------------


def test_beyond_the_kit_since_leaves_out_what_was_not_changed_since(server, client):
    since = (datetime.now(UTC) - timedelta(days=1)).isoformat()

    manifest = export(client, f"{server.base}/$export", _since=since)

    assert ids_by_type(client, manifest) == {"Patient": {"pat-c"}, "Observation": {"obs-c"}, "Group": {"grp"}}


def test_beyond_the_kit_type_exports_only_the_types_asked_for(server, client):
    manifest = export(client, f"{server.base}/$export", _type="Patient")

    assert ids_by_type(client, manifest) == {"Patient": {"pat-a", "pat-b", "pat-c"}}


def test_beyond_the_kit_type_filter_narrows_its_type(server, client):
    manifest = export(
        client, f"{server.base}/$export", _type="Observation,Patient", _typeFilter="Observation?category=vital-signs"
    )

    assert ids_by_type(client, manifest) == {"Observation": {"obs-c"}, "Patient": {"pat-a", "pat-b", "pat-c"}}


# --- Deletion -------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["$export", "Patient/$export", "Group/grp/$export"])
def test_bulk_data_export_cancel_delete_is_202_then_polling_is_404_with_an_operation_outcome(server, client, path):
    """bulk_data_export_cancel (v1.0.1 `perform_export_cancel_test`: DELETE → 202) and
    bulk_data_export_cancel_stu2 (`perform_cancelled_polling_test`: then 404 and an OperationOutcome)."""
    kicked = kick_off(client, f"{server.base}/{path}")
    status_url = kicked.headers["Content-Location"]

    deleted = client.delete(status_url, headers={"Accept": "application/json"})

    assert deleted.status_code == 202
    assert_operation_outcome(client.get(status_url, headers={"Accept": "application/json"}), 404)


def test_beyond_the_kit_a_finished_export_deleted_has_its_files_gone(server, client):
    kicked = kick_off(client, f"{server.base}/$export")
    status_url = kicked.headers["Content-Location"]
    manifest = poll(client, status_url)[0].json()

    assert client.delete(status_url).status_code == 202

    assert_operation_outcome(client.get(status_url), 404)
    assert_operation_outcome(client.get(manifest["output"][0]["url"]), 404)


@pytest.mark.parametrize(
    "path, status",
    [
        (f"$export-poll-status?_jobId={UNKNOWN_JOB}", 404),
        ("$export-poll-status?_jobId=not-a-uuid", 404),
        ("$export-poll-status", 400),
        (f"$export-file/{UNKNOWN_FILE}", 404),
        ("$export-poll-status?_jobId=x&page=0", 400),
    ],
)
def test_beyond_the_kit_status_and_file_urls_that_name_nothing_are_a_4xx_operation_outcome(
    server, client, path, status
):
    assert_operation_outcome(client.get(f"{server.base}/{path}", headers={"Accept": "application/json"}), status)


def test_beyond_the_kit_a_post_kick_off_with_parameters_runs_as_the_get_one(server, client):
    kicked = client.post(
        f"{server.base}/$export",
        json={"resourceType": "Parameters", "parameter": [{"name": "_type", "valueString": "Patient"}]},
        headers={**KICK_OFF_HEADERS, "Content-Type": "application/fhir+json"},
    )
    assert kicked.status_code == 202, kicked.text

    response, _ = poll(client, kicked.headers["Content-Location"])

    assert ids_by_type(client, response.json()) == {"Patient": {"pat-a", "pat-b", "pat-c"}}
