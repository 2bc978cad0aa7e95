"""Export files live in whatever Django storage STORAGES["bulkexport"] names (the database by default), and a
DELETE that comes while a write step is storing a file leaves nothing behind, whichever of the two gets the
export's row lock first; nor does a write step of a cancelled export, or a worker that died mid-write."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage, InMemoryStorage, storages
from django.db import connection
from freezegun import freeze_time

from batch import control
from batch.models import JobInstance
from batch.statuses import JobStatus
from blobstore.storage import DatabaseStorage
from fhirjobs.bulkexport import steps
from fhirjobs.bulkexport.files import connect_export_storage
from fhirjobs.bulkexport.models import BulkExport, ExportFile
from fhirjobs.bulkexport.services import purge_expired_exports
from tests.fhirjobs.helpers import patient
from tests.fhirstore.helpers import store

pytestmark = pytest.mark.django_db(transaction=True)


def use_storage(settings, backend: str, **options) -> None:
    settings.STORAGES = {**settings.STORAGES, "bulkexport": {"BACKEND": backend, "OPTIONS": options}}


def test_export_files_are_written_to_and_served_from_the_configured_storage_backend(exporter, settings):
    use_storage(settings, "django.core.files.storage.InMemoryStorage")
    store(*(patient(f"p{n}") for n in range(3)))

    manifest = exporter.export("/fhir/$export?_type=Patient")

    backend = storages["bulkexport"]
    assert isinstance(backend, InMemoryStorage)
    [path] = ExportFile.objects.values_list("path", flat=True)
    assert backend.exists(path)
    assert sorted(r["id"] for r in exporter.download(manifest)["Patient"]) == ["p0", "p1", "p2"]
    assert DatabaseStorage().listdir("") == ([], []), "nothing went to the default storage"


class PausingStorage(FileSystemStorage):
    """Holds the first `save` after the file is stored, until the test lets it go."""

    stored = threading.Event()
    go_on = threading.Event()

    def _save(self, name, content):
        saved = super()._save(name, content)
        PausingStorage.stored.set()
        assert PausingStorage.go_on.wait(120), "the test never let the write step go on"
        return saved


def test_a_delete_while_a_write_step_stores_its_file_removes_that_file_too(exporter, settings, tmp_path):
    PausingStorage.stored.clear()
    PausingStorage.go_on.clear()
    location = tmp_path / "exports"
    use_storage(settings, f"{__name__}.PausingStorage", location=str(location))
    store(*(patient(f"p{n}") for n in range(3)))
    status_url = exporter.kick_off("/fhir/$export?_type=Patient")["Content-Location"]
    while exporter.bus.sent[0][1]["targetStepId"] != "write-to-binaries":
        exporter.bus.deliver_next()

    def write_step() -> None:
        try:
            exporter.bus.deliver_next()
        finally:
            connection.close()  # this thread's own

    writing = threading.Thread(target=write_step)

    writing.start()  # the write step runs in another thread (another database connection), as on a worker
    assert PausingStorage.stored.wait(120)
    response = exporter.fhir.delete(status_url)  # while the file is stored but its row not yet written
    PausingStorage.go_on.set()
    writing.join(120)
    exporter.bus.drain()

    assert response.status_code == 202
    assert JobInstance.objects.get().status == JobStatus.CANCELLED
    assert not ExportFile.objects.exists()
    assert [path for path in location.rglob("*") if path.is_file()] == [], "the write step removed its own file"


def test_the_default_storage_is_the_database_and_a_download_streams_it_with_its_length(exporter, export_storage):
    store(*(patient(f"p{n}") for n in range(3)))

    manifest = exporter.export("/fhir/$export?_type=Patient")

    assert isinstance(storages["bulkexport"], DatabaseStorage)
    [name] = export_storage.names()
    response = exporter.fhir.get(manifest["output"][0]["url"])
    body = b"".join(response.streaming_content)
    assert int(response["Content-Length"]) == len(body) == DatabaseStorage().size(name)
    assert sorted(json.loads(line)["id"] for line in body.splitlines()) == ["p0", "p1", "p2"]


def test_a_file_no_row_names_is_deleted_with_its_export(exporter, export_storage):
    """A write step that died between storing its file and writing its row left the file under the export's
    directory: the DELETE of the export removes it too."""
    store(patient("p0"))
    status_url = exporter.kick_off("/fhir/$export?_type=Patient")["Content-Location"]
    export = BulkExport.objects.get()
    exporter.finish(status_url)
    storages["bulkexport"].save(f"{export.id}/Patient/left-by-a-dead-worker.ndjson", ContentFile(b"{}\n"))
    storages["bulkexport"].save("another-export/Patient/kept.ndjson", ContentFile(b"{}\n"))

    assert exporter.fhir.delete(status_url).status_code == 202

    assert export_storage.names() == ["another-export/Patient/kept.ndjson"]


def test_the_purge_deletes_the_files_no_row_names_too(exporter, export_storage, settings):
    settings.BULK_EXPORT_RETENTION_SECONDS = 1
    store(patient("p0"))
    exporter.export("/fhir/$export?_type=Patient")
    export = BulkExport.objects.get()
    storages["bulkexport"].save(f"{export.id}/Patient/left-by-a-dead-worker.ndjson", ContentFile(b"{}\n"))

    with freeze_time(datetime.now(UTC) + timedelta(seconds=5)):
        report = purge_expired_exports()

    assert (report.exports, report.files) == (1, 2)
    assert export_storage.names() == []


def test_a_write_step_cancelled_while_it_reads_writes_no_file(exporter, export_storage, monkeypatch):
    """The export is cancelled (by an operator: its row stays) while a write step reads the bodies: the step
    stops before it stores anything."""
    store(*(patient(f"p{n}") for n in range(3)))
    exporter.kick_off("/fhir/$export?_type=Patient")
    read_bodies = steps.row_range_bodies_ndjson

    def read_then_cancelled(*args, **kwargs):
        bodies = read_bodies(*args, **kwargs)
        control.cancel_job(JobInstance.objects.get().id)
        return bodies

    monkeypatch.setattr(steps, "row_range_bodies_ndjson", read_then_cancelled)
    exporter.bus.drain()

    assert JobInstance.objects.get().status == JobStatus.CANCELLED
    assert export_storage.names() == [] and not ExportFile.objects.exists()


def test_a_pool_process_sets_up_the_object_store_client_when_it_starts_without_a_request(settings):
    use_storage(
        settings,
        "storages.backends.s3.S3Storage",
        bucket_name="exports",
        endpoint_url="http://127.0.0.1:9",
        access_key="k",
        secret_key="s",
        region_name="us-east-1",
    )
    storage = storages["bulkexport"]
    assert getattr(storage._connections, "connection", None) is None

    connect_export_storage()  # port 9 (discard) answers nothing: setting up must not reach the store

    assert getattr(storage._connections, "connection", None) is not None
    assert storage.connection is storage._connections.connection, "the first file reuses it"


def test_storages_without_a_client_need_no_setting_up(settings):
    use_storage(settings, "blobstore.storage.DatabaseStorage")

    connect_export_storage()  # nothing to set up, nothing raised
