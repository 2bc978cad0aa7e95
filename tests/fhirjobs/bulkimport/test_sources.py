"""Issue #29 items 4 and 5: import sources cannot be bent (dot segments, prefix boundaries, header names,
credentials on redirects, private addresses), and gzip is read completely or not at all."""

from __future__ import annotations

import gzip
import json

import pytest

from batch.models import JobInstance
from batch.statuses import JobStatus
from fhirjobs.bulkimport import steps
from fhirjobs.bulkimport.exceptions import InvalidImportRequest
from fhirjobs.bulkimport.parameters import parse_submit_request
from fhirjobs.bulkimport.sources import check_source, inflated, lines, open_blocks
from fhirjobs.common.sources import SourceUnavailable
from fhirstore.models import Resource
from tests.fhirjobs.bulkimport.helpers import diagnostics

ALLOWED = "https://data.example.org/exports"


@pytest.mark.parametrize(
    "url",
    [
        f"{ALLOWED}/../admin/secret",
        f"{ALLOWED}/%2e%2e/admin/secret",
        f"{ALLOWED}/.%2E/admin/secret",
        f"{ALLOWED}/x/%2E%2E%2f..%2fadmin",
        f"{ALLOWED}/./Patient.ndjson",
        f"{ALLOWED}/..%5cadmin",
        "https://data.example.org/exports-internal/dump",
        "https://data.example.org/exportsPatient.ndjson",
    ],
)
def test_a_url_cannot_leave_its_prefix(url, settings):
    settings.BULK_IMPORT_ALLOWED_SOURCES = [ALLOWED]
    check_source(f"{ALLOWED}/Patient.ndjson")
    check_source(f"{ALLOWED}/2024/Patient.ndjson?X-Amz-Signature=abc")
    with pytest.raises(InvalidImportRequest):
        check_source(url)


def submit_body(header_name: str, header_value: str = "x") -> dict:
    return {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "submitter", "valueIdentifier": {"system": "urn:p", "value": "p"}},
            {"name": "submissionId", "valueString": "s"},
            {
                "name": "fileRequestHeader",
                "part": [
                    {"name": "headerName", "valueString": header_name},
                    {"name": "headerValue", "valueString": header_value},
                ],
            },
        ],
    }


@pytest.mark.parametrize("name", ["Host", "Cookie", "X-Forwarded-For", "Transfer-Encoding"])
def test_a_file_request_header_must_be_one_a_provider_may_set(name):
    assert parse_submit_request(submit_body("authorization", "Bearer t")).headers == {"authorization": "Bearer t"}
    with pytest.raises(InvalidImportRequest, match="BULK_IMPORT_REQUEST_HEADERS"):
        parse_submit_request(submit_body(name, "admin.internal"))


def read_all(url: str, headers: dict) -> bytes:
    with open_blocks(url, headers) as blocks:
        return b"".join(blocks)


def test_credentials_stay_with_their_origin_across_a_redirect(http_sources, settings):
    provider, storage = http_sources.bases
    settings.BULK_IMPORT_ALLOWED_SOURCES = [f"{provider}/files/", f"{storage}/bucket/"]
    http_sources.routes = {
        "/files/a": (302, {"Location": "/files/b"}, b""),
        "/files/b": (307, {"Location": f"{storage}/bucket/b?X-Amz-Signature=s"}, b""),
        "/bucket/b?X-Amz-Signature=s": (200, {}, b"content"),
    }

    assert read_all(f"{provider}/files/a", {"Authorization": "Bearer secret", "Cookie": "c=1"}) == b"content"

    assert [(path, auth, cookie) for _, path, auth, cookie in http_sources.requests] == [
        ("/files/a", "Bearer secret", "c=1"),
        ("/files/b", "Bearer secret", "c=1"),
        ("/bucket/b?X-Amz-Signature=s", None, None),
    ]


def test_a_name_resolving_to_a_private_address_is_refused_unless_the_address_is_listed(http_sources, settings):
    port = http_sources.base.rsplit(":", 1)[1]
    http_sources.routes = {"/files/a": (200, {}, b"content")}
    settings.BULK_IMPORT_ALLOWED_SOURCES = [f"http://localhost:{port}/files/"]
    with pytest.raises(InvalidImportRequest, match="loopback, private or link-local"):
        read_all(f"http://localhost:{port}/files/a", {})
    assert http_sources.requests == []

    settings.BULK_IMPORT_ALLOWED_SOURCES = [f"http://127.0.0.1:{port}/files/"]
    assert read_all(f"http://127.0.0.1:{port}/files/a", {}) == b"content"


def test_a_redirect_to_a_private_address_is_refused_even_under_an_allowed_name(http_sources, settings):
    provider, other = http_sources.bases
    other_port = other.rsplit(":", 1)[1]
    settings.BULK_IMPORT_ALLOWED_SOURCES = [f"{provider}/files/", f"http://localhost:{other_port}/"]
    http_sources.routes = {"/files/a": (302, {"Location": f"http://localhost:{other_port}/admin"}, b"")}
    with pytest.raises(InvalidImportRequest, match="resolves to 127.0.0.1"):
        read_all(f"{provider}/files/a", {})
    assert [request.path for request in http_sources.requests] == ["/files/a"]


def test_a_redirect_to_a_file_url_is_refused_even_under_the_file_root(http_sources, settings, tmp_path):
    settings.BULK_IMPORT_ALLOWED_SOURCES = [f"{http_sources.base}/files/"]
    settings.BULK_IMPORT_FILE_ROOT = str(tmp_path)
    (tmp_path / "Patient.ndjson").write_bytes(b"local")
    http_sources.routes = {"/files/a": (302, {"Location": (tmp_path / "Patient.ndjson").as_uri()}, b"")}
    with pytest.raises(InvalidImportRequest, match="a redirect leads only to an http"):
        read_all(f"{http_sources.base}/files/a", {})


def test_query_strings_stay_out_of_logs_and_job_errors(http_sources, settings, caplog, monkeypatch):
    provider = http_sources.base
    settings.BULK_IMPORT_ALLOWED_SOURCES = [f"{provider}/files/"]
    settings.BULK_IMPORT_SOURCE_RETRY_SECONDS = 0
    url = f"{provider}/files/Patient.ndjson?X-Amz-Credential=AKIA&X-Amz-Signature=s3cr3t"
    caplog.set_level("INFO")

    with pytest.raises(steps.JobFailed) as failed:
        list(steps.read_lines(url, steps.Reading(), lambda reason, for_seconds=0: None))

    assert "s3cr3t" not in str(failed.value) and "Patient.ndjson?<redacted>: HTTP 404" in str(failed.value)
    assert "HTTP Request" in caplog.text and "s3cr3t" not in caplog.text


NDJSON = [json.dumps({"resourceType": "Patient", "id": f"p{n}"}).encode() for n in range(6)]


def blocks_of(data: bytes, size: int = 7):
    return iter([data[start : start + size] for start in range(0, len(data), size)])


@pytest.mark.parametrize("size", [7, 1 << 20])  # members split across blocks, and several in one block
def test_every_member_of_a_multi_member_gzip_is_read(size):
    data = gzip.compress(b"\n".join(NDJSON[:3]) + b"\n") + gzip.compress(b"\n".join(NDJSON[3:]) + b"\n")
    assert [line.content for line in lines(blocks_of(data, size), source="a.gz")] == NDJSON


def test_a_truncated_gzip_stream_is_a_retryable_source_error():
    data = gzip.compress(b"\n".join(NDJSON) + b"\n")
    with pytest.raises(SourceUnavailable, match="cut off") as raised:
        list(inflated(blocks_of(data[: len(data) // 2])))
    assert raised.value.retryable
    with pytest.raises(SourceUnavailable, match="corrupt") as raised:
        list(inflated(blocks_of(gzip.compress(b"x") + b"garbage that is not gzip")))
    assert not raised.value.retryable


@pytest.mark.django_db(transaction=True)
def test_an_import_of_a_truncated_gzip_fails_instead_of_completing(importer, file_root, settings):
    settings.BULK_IMPORT_SOURCE_RETRY_SECONDS = 0
    data = gzip.compress(b"\n".join(NDJSON) + b"\n")
    (file_root / "Patient.ndjson.gz").write_bytes(data[: len(data) // 2])

    response = importer.kick_off((file_root / "Patient.ndjson.gz").as_uri())
    assert response.status_code == 202, response.content
    importer.bus.drain()

    assert JobInstance.objects.get().status == JobStatus.FAILED
    failed = importer.fhir.get(response["Content-Location"])
    assert failed.status_code == 500 and "cut off" in " ".join(diagnostics(failed.json()))
    assert Resource.objects.count() < len(NDJSON)


class FakeClock:
    """`time` as `steps` sees it: sleeping moves the clock on at once; `on_sleep(now)` runs at every sleep."""

    def __init__(self, on_sleep=lambda now: None):
        self.now, self.slept, self.on_sleep = 1000.0, [], on_sleep

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(round(seconds, 3))
        self.now += seconds
        self.on_sleep(self.now)


def test_a_source_that_stays_down_is_tried_again_for_the_whole_window_then_fails_the_import(settings, monkeypatch):
    """Issue #24: 4 attempts within 7 s failed an import whose proxy restarted. Now a window, with capped backoff."""
    settings.BULK_IMPORT_ALLOWED_SOURCES = ["http://127.0.0.1:9/"]  # the discard port: nothing listens
    settings.BULK_IMPORT_SOURCE_RETRY_SECONDS = 60
    clock = FakeClock()
    monkeypatch.setattr(steps, "time", clock)
    said = []

    with pytest.raises(steps.JobFailed) as failed:
        list(
            steps.read_lines(
                "http://127.0.0.1:9/Patient.ndjson", steps.Reading(), lambda reason, for_seconds=0: said.append(reason)
            )
        )

    assert clock.slept == [1, 2, 4, 8, 10, 10, 10, 10, 5], "doubling up to 10 s, the last wait ending the window"
    assert "(after 10 attempts over 60 s; BULK_IMPORT_SOURCE_RETRY_SECONDS=60)" in str(failed.value)
    assert said[0].startswith("waiting for the source http://127.0.0.1:9/Patient.ndjson, unavailable for 0 s (")
    assert "attempt 2 in 1 s, giving up 60 s from now" in said[0]
    assert len(said) == 10 and said[-1] is None, "each wait said, and cleared when the step gives up"
