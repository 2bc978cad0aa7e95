"""Export files in an S3-compatible object store: a real one (SeaweedFS, started here), never a mock.

The objects are gzip-compressed (`blobstore.s3.GzipS3Storage`, the documented backend). Downloads by a client
that accepts gzip are a 302 to a short-lived presigned URL once the token is checked; any other client gets the
NDJSON inflated by the web process. DELETE and the purge remove the objects, also those no row names."""

from __future__ import annotations

import gzip
import json
import urllib.error
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import storages
from freezegun import freeze_time

from batch.models import JobInstance
from fhirjobs.bulkexport import files
from fhirjobs.bulkexport.models import BulkExport, ExportFile
from fhirjobs.bulkexport.services import purge_expired_exports
from heavylift.devobjectstore import (
    client,
    create_bucket,
    running_object_store,
    storage_options,
)
from tests.fhirjobs.bulkexport.helpers import observation
from tests.fhirjobs.helpers import patient
from tests.fhirstore.helpers import assert_outcome, store

pytestmark = pytest.mark.django_db(transaction=True)


BUCKET = "exports"


@pytest.fixture(scope="module")
def object_store(tmp_path_factory):
    with running_object_store(tmp_path_factory.mktemp("seaweedfs")) as running:
        create_bucket(running, BUCKET)
        yield running


GZIP_S3 = "blobstore.s3.GzipS3Storage"
PLAIN_S3 = "storages.backends.s3.S3Storage"


def use_object_store(settings, object_store, backend: str = GZIP_S3) -> str:
    """The export storage: a folder of this test's own in the bucket."""
    folder = f"test-{uuid.uuid4().hex[:12]}"
    settings.STORAGES = {
        **settings.STORAGES,
        "bulkexport": {"BACKEND": backend, "OPTIONS": storage_options(object_store, BUCKET, 30, location=folder)},
    }
    return folder


@pytest.fixture
def folder(object_store, settings) -> str:
    return use_object_store(settings, object_store)


def objects(object_store, folder: str) -> list[str]:
    listed = client(object_store).list_objects_v2(Bucket=BUCKET, Prefix=f"{folder}/")
    return sorted(item["Key"] for item in listed.get("Contents", []))


def fetch(url: str, headers: dict | None = None) -> tuple[bytes, str | None]:
    """The body as sent, and its Content-Encoding."""
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=30) as response:
        return response.read(), response.headers.get("Content-Encoding")


def ids_of(ndjson: bytes) -> list[str]:
    return sorted(json.loads(line)["id"] for line in ndjson.splitlines())


def test_a_download_that_accepts_gzip_is_a_redirect_to_a_presigned_url_of_the_gzipped_object(
    exporter, object_store, folder
):
    store(*(patient(f"p{n}") for n in range(3)))

    manifest = exporter.export("/fhir/$export?_type=Patient")
    response = exporter.fhir.get(manifest["output"][0]["url"], HTTP_ACCEPT_ENCODING="gzip, deflate")

    assert manifest["requiresAccessToken"] is True, "the manifest's URLs are this server's: the token is checked"
    assert response.status_code == 302
    location = response["Location"]
    assert location.startswith(f"{object_store.endpoint_url}/{BUCKET}/{folder}/") and "Expires=" in location
    body, encoding = fetch(location, {"Accept-Encoding": "gzip"})
    assert encoding == "gzip", "the object store serves the object with the encoding it was stored with"
    assert ids_of(gzip.decompress(body)) == ["p0", "p1", "p2"]
    with pytest.raises(urllib.error.HTTPError) as refused:
        fetch(location.split("?")[0])  # without the signature: the object store refuses
    assert refused.value.code == 403


def test_the_object_is_stored_gzip_compressed_as_fhir_ndjson(exporter, object_store, folder):
    store(*(patient(f"p{n}") for n in range(3)))

    exporter.export("/fhir/$export?_type=Patient")

    (key,) = objects(object_store, folder)
    stored = client(object_store).get_object(Bucket=BUCKET, Key=key)
    assert (stored["ContentEncoding"], stored["ContentType"]) == ("gzip", "application/fhir+ndjson")
    assert ids_of(gzip.decompress(stored["Body"].read())) == ["p0", "p1", "p2"]


def test_a_client_that_does_not_accept_gzip_gets_the_ndjson_inflated_by_the_web_process(exporter, folder):
    store(*(patient(f"p{n}") for n in range(3)))
    manifest = exporter.export("/fhir/$export?_type=Patient")

    response = exporter.fhir.get(manifest["output"][0]["url"])

    assert response.status_code == 200, "never a redirect to gzip bytes it did not ask for"
    assert "Content-Encoding" not in response
    assert ids_of(b"".join(response.streaming_content)) == ["p0", "p1", "p2"]


def test_without_redirects_a_client_that_accepts_gzip_gets_the_stored_bytes_as_they_are(
    exporter, object_store, folder, settings
):
    settings.BULK_EXPORT_DOWNLOAD_REDIRECT = False
    store(*(patient(f"p{n}") for n in range(3)))
    manifest = exporter.export("/fhir/$export?_type=Patient")

    response = exporter.fhir.get(manifest["output"][0]["url"], HTTP_ACCEPT_ENCODING="gzip")

    (key,) = objects(object_store, folder)
    assert response.status_code == 200 and response["Content-Encoding"] == "gzip"
    assert (
        b"".join(response.streaming_content) == client(object_store).get_object(Bucket=BUCKET, Key=key)["Body"].read()
    ), "not inflated and compressed again"


def test_a_plain_s3_storage_redirects_every_client(exporter, object_store, settings):
    use_object_store(settings, object_store, PLAIN_S3)
    store(*(patient(f"p{n}") for n in range(3)))
    manifest = exporter.export("/fhir/$export?_type=Patient")

    response = exporter.fhir.get(manifest["output"][0]["url"])

    assert response.status_code == 302
    body, encoding = fetch(response["Location"])
    assert (encoding, ids_of(body)) == (None, ["p0", "p1", "p2"])


def test_without_redirects_the_object_is_streamed_through_the_web_process(exporter, folder, settings):
    settings.BULK_EXPORT_DOWNLOAD_REDIRECT = False
    store(*(patient(f"p{n}") for n in range(3)))

    manifest = exporter.export("/fhir/$export?_type=Patient")

    assert exporter.ids(manifest) == {"Patient": ["p0", "p1", "p2"]}


def test_another_users_download_is_404_and_never_a_redirect(exporter, folder, other_user_client):
    store(patient("p0"))
    manifest = exporter.export("/fhir/$export?_type=Patient")

    response = other_user_client.get(manifest["output"][0]["url"])

    assert_outcome(response, 404)
    assert "Location" not in response


def test_delete_removes_every_object_of_the_export_also_one_no_row_names(exporter, object_store, folder):
    store(*(patient(f"p{n}") for n in range(3)))
    status_url = exporter.kick_off("/fhir/$export?_type=Patient")["Content-Location"]
    exporter.finish(status_url)
    export = BulkExport.objects.get()
    storages["bulkexport"].save(f"{export.id}/Patient/left-by-a-dead-worker.ndjson", ContentFile(b"{}\n"))
    assert len(objects(object_store, folder)) == 2

    assert exporter.fhir.delete(status_url).status_code == 202

    assert objects(object_store, folder) == []


def test_the_purge_removes_the_objects_of_expired_exports(exporter, object_store, folder, settings):
    settings.BULK_EXPORT_RETENTION_SECONDS = 1
    store(patient("p0"))
    exporter.export("/fhir/$export?_type=Patient")
    assert len(objects(object_store, folder)) == 1

    with freeze_time(datetime.now(UTC) + timedelta(seconds=5)):
        report = purge_expired_exports()

    assert (report.exports, report.files) == (1, 1)
    assert objects(object_store, folder) == []


def test_uploading_while_reading_writes_a_file_per_type_of_each_half_range_and_every_resource_once(
    exporter, folder, settings
):
    settings.BULK_EXPORT_UPLOAD_WHILE_READING = True
    settings.BULK_EXPORT_CHUNK_SIZE = 10
    store(*(patient(f"p{n}") for n in range(8)), *(observation(f"o{n}", f"p{n % 8}") for n in range(16)))

    manifest = exporter.export("/fhir/$export")  # the whole store: row ranges of 10, read in halves of 5

    assert exporter.ids(manifest) == {
        "Observation": sorted(f"o{n}" for n in range(16)),
        "Patient": sorted(f"p{n}" for n in range(8)),
    }
    assert max(output["count"] for output in manifest["output"]) <= 5
    assert ExportFile.objects.count() == len(manifest["output"])


def test_a_failed_upload_fails_the_write_and_no_row_names_a_file(exporter, folder, settings, monkeypatch):
    settings.BULK_EXPORT_UPLOAD_WHILE_READING = True
    settings.BULK_EXPORT_CHUNK_SIZE = 10
    settings.BATCH_MAX_CHUNK_RETRIES = 0
    store(*(patient(f"p{n}") for n in range(10)))
    write_file = files.write_file

    def second_half_fails(path: str, content: bytes) -> None:
        if "/Patient/" in path and len(content.splitlines()) == 5 and b'"p9"' in content:
            raise OSError("the object store is gone")
        write_file(path, content)

    monkeypatch.setattr(files, "write_file", second_half_fails)
    exporter.kick_off("/fhir/$export")
    exporter.bus.drain()

    assert JobInstance.objects.get().status == "FAILED"
    assert not ExportFile.objects.exists()
