"""Kick-off and its refusals (allow-list, permission, Prefer), HTTP sources (gzip, retries, redirects), DELETE."""

import gzip
import io
import json
import socket

import pytest

from batch.models import JobInstance
from batch.statuses import JobStatus
from fhirjobs.bulkimport import steps
from fhirjobs.bulkimport.models import BulkImport
from fhirstore.models import Resource
from tests.fhirjobs.bulkimport.helpers import HttpSources, diagnostics, parameters, write_ndjson
from tests.fhirstore.helpers import assert_outcome

pytestmark = pytest.mark.django_db(transaction=True)

PATIENTS = b"".join(json.dumps({"resourceType": "Patient", "id": f"p{n}"}).encode() + b"\n" for n in range(5))


@pytest.fixture
def source(http_sources, settings, monkeypatch) -> HttpSources:
    """The first server's /allowed/ is the only allowed source; retries do not wait."""
    settings.BULK_IMPORT_ALLOWED_SOURCES = [f"{http_sources.base}/allowed/"]
    monkeypatch.setattr(steps, "RETRY_BACKOFF_SECONDS", 0.01)
    return http_sources


def test_a_source_outside_the_allow_list_is_400_and_nothing_is_fetched_or_started(importer, source):
    response = importer.kick_off(f"{source.base}/elsewhere/Patient.ndjson")

    assert_outcome(response, 400, "not under an allowed import source")
    assert source.requests == [] and not JobInstance.objects.exists() and not BulkImport.objects.exists()


def test_file_urls_outside_the_file_root_are_400(importer, tmp_path):
    assert_outcome(importer.kick_off((tmp_path / "Patient.ndjson").as_uri()), 400, "not under BULK_IMPORT_FILE_ROOT")
    assert_outcome(importer.kick_off("file:///etc/passwd"), 400, "not under BULK_IMPORT_FILE_ROOT")


def test_gzipped_http_source_with_basic_credentials_loads_after_transient_failures(importer, source):
    source.routes["/allowed/Patient.ndjson.gz"] = (200, {"Content-Type": "application/gzip"}, gzip.compress(PATIENTS))
    source.failures["/allowed/Patient.ndjson.gz"] = 2

    outcome = importer.run(f"{source.base}/allowed/Patient.ndjson.gz", credentialHttpBasic="user:secret")

    assert diagnostics(outcome)[0] == "Import completed: 5 loaded, 0 unchanged, 0 failed, 0 warnings"
    assert [request.authorization for request in source.requests] == ["Basic dXNlcjpzZWNyZXQ="] * 3


def test_a_source_that_keeps_failing_fails_the_import_with_a_clear_message(importer, source, settings):
    settings.BULK_IMPORT_SOURCE_RETRY_SECONDS = 0
    source.failures["/allowed/Patient.ndjson"] = 5
    response = importer.kick_off(f"{source.base}/allowed/Patient.ndjson")
    importer.bus.drain()

    failed = importer.fhir.get(response["Content-Location"])
    assert_outcome(failed, 500, "HTTP 503 (after 1 attempt; BULK_IMPORT_SOURCE_RETRY_SECONDS=0)")
    assert failed.content.decode().count("/allowed/Patient.ndjson") == 1, "the source is named once"
    assert len(source.requests) == 1


def test_a_source_down_for_a_proxy_restart_is_waited_for_and_the_job_page_says_so(
    importer, settings, monkeypatch, admin_client
):
    """Issue #24: down for ~7 s used to fail the import (4 attempts). The source here refuses connections (nothing
    listens on its port) for 15 s of the steps' clock, then comes up; meanwhile the job page says what it waits for."""
    from tests.fhirjobs.bulkimport.test_sources import FakeClock

    with socket.socket() as probe:  # a port nothing listens on until the server starts on it
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    settings.BULK_IMPORT_ALLOWED_SOURCES = [f"{base}/allowed/"]
    servers, pages = [], []

    def source_comes_up_after_15_s(now: float) -> None:
        if now - 1000 >= 15 and not servers:
            job = JobInstance.objects.get()
            pages.append(admin_client.get(f"/admin/batch/jobinstance/{job.id}/change/").content.decode())
            servers.append(HttpSources(ports=[port]))
            servers[0].routes["/allowed/Patient.ndjson"] = (200, {}, PATIENTS)

    clock = FakeClock(source_comes_up_after_15_s)
    monkeypatch.setattr(steps, "time", clock)
    try:
        outcome = importer.run(f"{base}/allowed/Patient.ndjson")
    finally:
        for server in servers:
            server.close()

    assert diagnostics(outcome)[0] == "Import completed: 5 loaded, 0 unchanged, 0 failed, 0 warnings"
    assert clock.slept == [1, 2, 4, 8], "15 s down: four waits, the fifth attempt reads it"
    assert 'id="why-waiting"' in pages[0] and f"waiting for the source {base}/allowed/Patient.ndjson" in pages[0]
    assert "unavailable for 7 s" in pages[0] and "attempt 5 in 8 s, giving up 53 s from now" in pages[0]
    job = JobInstance.objects.get()
    assert (
        "waiting for the source" not in admin_client.get(f"/admin/batch/jobinstance/{job.id}/change/").content.decode()
    )


def test_a_redirect_out_of_the_allow_list_is_not_followed(importer, source):
    source.routes["/allowed/Patient.ndjson"] = (302, {"Location": f"{source.base}/internal/secret"}, b"")
    response = importer.kick_off(f"{source.base}/allowed/Patient.ndjson")
    importer.bus.drain()

    assert_outcome(importer.fhir.get(response["Content-Location"]), 500, "not under an allowed import source")
    assert [request.path for request in source.requests] == ["/allowed/Patient.ndjson"]


def test_kick_off_needs_respond_async_and_ndjson(importer, file_root):
    url = write_ndjson(file_root / "Patient.ndjson", {"resourceType": "Patient", "id": "p"}).as_uri()

    assert_outcome(importer.kick_off(url, prefer=""), 400, "Prefer: respond-async")
    body = parameters(url)
    body["parameter"][0]["valueCode"] = "text/csv"
    assert_outcome(importer.fhir.post("/fhir/$import", body, HTTP_PREFER="respond-async"), 400, "inputFormat")
    assert_outcome(
        importer.fhir.post("/fhir/$import", {"resourceType": "Patient"}, HTTP_PREFER="respond-async"), 400, "Parameters"
    )


def test_import_needs_staff_or_the_import_permission(fhir, anonymous, file_root, api_user):
    url = write_ndjson(file_root / "Patient.ndjson", {"resourceType": "Patient", "id": "p"}).as_uri()

    assert_outcome(anonymous.post("/fhir/$import", parameters(url), HTTP_PREFER="respond-async"), 401)
    assert_outcome(fhir.post("/fhir/$import", parameters(url), HTTP_PREFER="respond-async"), 403, "start_import")

    from django.contrib.auth.models import Permission

    api_user.user_permissions.add(Permission.objects.get(codename="start_import"))
    assert fhir.post("/fhir/$import", parameters(url), HTTP_PREFER="respond-async").status_code == 202


def test_polling_shows_progress_then_delete_cancels_and_later_polls_are_404(importer, file_root):
    url = write_ndjson(file_root / "Patient.ndjson", {"resourceType": "Patient", "id": "p"}).as_uri()
    status_url = importer.kick_off(url)["Content-Location"]
    assert status_url.startswith("http://testserver/fhir/$import-poll-status?_jobId=")

    running = importer.fhir.get(status_url)
    assert running.status_code == 202 and running["X-Progress"] and running["Retry-After"] == "2"

    assert importer.fhir.delete(status_url).status_code == 202
    importer.bus.drain()
    assert JobInstance.objects.get().status == JobStatus.CANCELLED
    assert_outcome(importer.fhir.get(status_url), 404)
    assert not Resource.objects.exists()


def test_another_users_import_is_not_found(importer, file_root, django_user_model):
    from jobsite.tokens import token_for
    from tests.fhirstore.helpers import FhirClient

    url = write_ndjson(file_root / "Patient.ndjson", {"resourceType": "Patient", "id": "p"}).as_uri()
    status_url = importer.kick_off(url)["Content-Location"]
    other = django_user_model.objects.create_user("other-importer", is_staff=True)

    assert_outcome(FhirClient(f"Bearer {token_for(other)}").get(status_url), 404)


def test_import_fhir_starts_the_job_on_files_under_the_file_root_and_refuses_others(file_root, bus, tmp_path):
    from django.core.management import CommandError, call_command

    write_ndjson(file_root / "Patient.ndjson", {"resourceType": "Patient", "id": "p"})
    out = io.StringIO()
    call_command("import_fhir", str(file_root), stdout=out)
    bus.drain()

    assert out.getvalue().startswith("import ")
    assert JobInstance.objects.get().status == JobStatus.COMPLETED
    assert Resource.objects.filter(logical_id="p").exists()
    with pytest.raises(CommandError, match="not under BULK_IMPORT_FILE_ROOT"):
        call_command("import_fhir", str(write_ndjson(tmp_path / "Patient.ndjson", "{}")))


@pytest.mark.parametrize(
    "url",
    [
        "https://data.example.org.evil.com/Patient.ndjson",
        "https://data.example.org@evil.com/Patient.ndjson",
        "https://evil.com/https://data.example.org/Patient.ndjson",
        "ftp://data.example.org/Patient.ndjson",
    ],
)
def test_the_allow_list_matches_host_and_path_not_just_text(url, settings):
    from fhirjobs.bulkimport.exceptions import InvalidImportRequest
    from fhirjobs.bulkimport.sources import check_source

    settings.BULK_IMPORT_ALLOWED_SOURCES = ["https://data.example.org"]
    check_source("https://data.example.org/exports/Patient.ndjson")
    with pytest.raises(InvalidImportRequest):
        check_source(url)


def test_import_needs_a_token_with_the_import_scope(file_root, django_user_model):
    from jobsite.tokens import token_for
    from tests.fhirstore.helpers import FhirClient

    user = django_user_model.objects.create_user("reader-only", is_staff=True)
    client = FhirClient(f"Bearer {token_for(user, ['fhir:read', 'fhir:write', 'export'])}")
    url = write_ndjson(file_root / "Patient.ndjson", {"resourceType": "Patient", "id": "p"}).as_uri()

    assert_outcome(client.post("/fhir/$import", parameters(url), HTTP_PREFER="respond-async"), 403, "import")
    assert not BulkImport.objects.exists()


def test_the_import_s_job_id_is_its_batch_job_s_id(importer, file_root):
    path = file_root / "Patient.ndjson"
    path.write_text('{"resourceType":"Patient","id":"p1"}\n')

    job_id = importer.kick_off(path.as_uri())["Content-Location"].split("_jobId=")[1]

    assert str(BulkImport.objects.get().job_instance_id) == job_id


def test_a_source_the_workers_host_does_not_allow_fails_naming_that_host_and_the_setting(importer, source, settings):
    """Accepted by the web host's allow-list, refused by the worker's (set on one host only): the error says
    which host refused, by which setting."""
    source.routes["/allowed/Patient.ndjson"] = (200, {}, PATIENTS)
    response = importer.kick_off(f"{source.base}/allowed/Patient.ndjson")
    assert response.status_code == 202
    settings.BULK_IMPORT_ALLOWED_SOURCES = []  # the worker's host

    importer.bus.drain()

    assert_outcome(
        importer.fhir.get(response["Content-Location"]),
        500,
        f"BULK_IMPORT_ALLOWED_SOURCES on host {socket.gethostname()}",
    )
    assert source.requests == []


def test_a_file_only_the_web_host_has_fails_naming_the_host_that_looked(importer, file_root):
    path = write_ndjson(file_root / "Patient.ndjson", {"resourceType": "Patient", "id": "p"})
    response = importer.kick_off(path.as_uri())
    assert response.status_code == 202
    path.unlink()  # not on the worker's disk

    importer.bus.drain()

    assert_outcome(
        importer.fhir.get(response["Content-Location"]),
        500,
        f"looked for on host {socket.gethostname()}, under its BULK_IMPORT_FILE_ROOT",
    )
