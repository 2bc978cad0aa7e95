"""Export files live in whatever Django storage STORAGES["bulkexport"] names, and a DELETE that comes while
a write step is storing a file leaves nothing behind, whichever of the two gets the export's row lock first."""
from __future__ import annotations

import threading

import pytest
from django.db import connection
from django.core.files.storage import FileSystemStorage, InMemoryStorage, storages

from batch.models import JobInstance
from batch.statuses import JobStatus
from fhirjobs.bulkexport.models import ExportFile
from tests.fhirjobs.bulkexport.helpers import patient
from tests.fhirstore.helpers import store

pytestmark = pytest.mark.django_db(transaction=True)


def use_storage(settings, backend: str, **options) -> None:
    settings.STORAGES = {**settings.STORAGES, "bulkexport": {"BACKEND": backend, "OPTIONS": options}}


def test_export_files_are_written_to_and_served_from_the_configured_storage_backend(
        exporter, settings, export_storage):
    use_storage(settings, "django.core.files.storage.InMemoryStorage")
    store(*(patient(f"p{n}") for n in range(3)))

    manifest = exporter.export("/fhir/$export?_type=Patient")

    backend = storages["bulkexport"]
    assert isinstance(backend, InMemoryStorage)
    [path] = ExportFile.objects.values_list("path", flat=True)
    assert backend.exists(path)
    assert sorted(r["id"] for r in exporter.download(manifest)["Patient"]) == ["p0", "p1", "p2"]
    assert not export_storage.exists(), "nothing went to the file system"


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
