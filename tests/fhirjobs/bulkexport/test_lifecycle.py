"""After the kick-off: DELETE before, during and after the job; failures; owners; expiry and the purge job."""

import json
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime

import pytest
from django.db import connection
from freezegun import freeze_time

from batch import control
from batch.models import JobInstance, WorkChunk
from batch.statuses import JobStatus
from fhirjobs.bulkexport.models import BulkExport, ExportFile
from fhirjobs.bulkexport.services import delete_files_of_ended_exports, purge_expired_exports
from scheduling.registry import registry as scheduled_jobs
from tests.fhirjobs.bulkexport.helpers import observation
from tests.fhirjobs.helpers import patient
from tests.fhirstore.helpers import assert_outcome, store

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def resources(settings):
    settings.BULK_EXPORT_CHUNK_SIZE = 2  # several chunks, so a DELETE can land between them
    store(*(patient(f"p{n}") for n in range(6)))
    store(*(observation(f"o{n}", "p0") for n in range(6)))


def stored_files(export_storage) -> list[str]:
    return export_storage.names()


def assert_gone(exporter, status_url: str) -> None:
    for _ in range(2):  # every later poll, not just the first
        assert_outcome(exporter.fhir.get(status_url), 404)


def test_delete_before_the_job_ran_cancels_it_and_later_polls_are_404(exporter, export_storage):
    status_url = exporter.kick_off("/fhir/$export?_type=Patient")["Content-Location"]

    response = exporter.fhir.delete(status_url)
    exporter.bus.drain()

    assert response.status_code == 202
    assert_gone(exporter, status_url)
    assert JobInstance.objects.get().status == JobStatus.CANCELLED
    assert stored_files(export_storage) == [] and not ExportFile.objects.exists()


def test_delete_while_files_are_being_written_stops_the_job_and_removes_every_file(exporter, export_storage):
    status_url = exporter.kick_off("/fhir/$export?_type=Patient,Observation")["Content-Location"]
    while not ExportFile.objects.exists():
        exporter.bus.deliver_next()

    response = exporter.fhir.delete(status_url)
    exporter.bus.drain()

    assert response.status_code == 202
    assert_gone(exporter, status_url)
    assert JobInstance.objects.get().status == JobStatus.CANCELLED
    assert stored_files(export_storage) == [] and not ExportFile.objects.exists()
    assert not WorkChunk.objects.filter(data__isnull=False).exists()  # no patient data left in the chunks


def test_delete_after_completion_removes_the_files_and_their_urls(exporter, export_storage):
    status_url = exporter.kick_off("/fhir/$export?_type=Patient")["Content-Location"]
    manifest = exporter.finish(status_url)
    assert len(stored_files(export_storage)) == 3

    response = exporter.fhir.delete(status_url)

    assert response.status_code == 202
    assert_gone(exporter, status_url)
    assert stored_files(export_storage) == []
    assert_outcome(exporter.fhir.get(manifest["output"][0]["url"]), 404)
    assert JobInstance.objects.get().status == JobStatus.COMPLETED


def test_a_deleted_export_can_be_started_afresh(exporter):
    first = exporter.kick_off("/fhir/$export?_type=Patient")["Content-Location"]
    exporter.fhir.delete(first)

    second = exporter.kick_off("/fhir/$export?_type=Patient")["Content-Location"]

    assert second != first
    assert exporter.finish(second)["output"]


def test_another_user_cannot_see_delete_or_download_an_export(exporter, other_user_client):
    status_url = exporter.kick_off("/fhir/$export?_type=Patient")["Content-Location"]
    manifest = exporter.finish(status_url)

    assert_outcome(other_user_client.get(status_url), 404)
    assert_outcome(other_user_client.delete(status_url), 404)
    assert_outcome(other_user_client.get(manifest["output"][0]["url"]), 404)
    assert exporter.fhir.get(status_url).status_code == 200


def test_a_failed_export_answers_500_with_an_operation_outcome(exporter):
    status_url = exporter.kick_off("/fhir/$export?_type=Patient")["Content-Location"]
    with connection.cursor() as cursor:  # its hold lapsed: it fails rather than miss what an expunge removed
        cursor.execute("UPDATE fhirstore_snapshothold SET expires_at = now() - interval '1 second'")
    exporter.bus.drain()

    assert_outcome(exporter.fhir.get(status_url), 500, "snapshot of the store lapsed")
    assert not WorkChunk.objects.filter(data__isnull=False).exists()


def test_a_failed_export_tells_the_client_no_server_paths(exporter, monkeypatch):
    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device", "/srv/heavylift/media/bulkexport/x/Patient.ndjson")

    monkeypatch.setattr("fhirjobs.bulkexport.files.write_file", disk_full)
    status_url = exporter.kick_off("/fhir/$export?_type=Patient")["Content-Location"]
    exporter.bus.drain()

    body = assert_outcome(exporter.fhir.get(status_url), 500, "an operator can see why")
    assert "/srv" not in json.dumps(body) and "No space" not in json.dumps(body)


def test_the_data_of_failed_or_cancelled_exports_is_discarded_by_a_clustered_job(exporter):
    exporter.kick_off("/fhir/$export?_type=Patient,Observation")
    exporter.bus.deliver_next()
    control.cancel_job(JobInstance.objects.get().id)  # as an operator on /control would
    assert WorkChunk.objects.filter(data__isnull=False).exists()

    scheduled_jobs.get("fhirstore.bulkexport.periodic.discard_failed_export_data").function()

    assert not WorkChunk.objects.filter(data__isnull=False).exists()


def test_the_manifest_says_when_its_files_expire(exporter, settings):
    settings.BULK_EXPORT_RETENTION_SECONDS = 600
    status_url = exporter.kick_off("/fhir/$export?_type=Patient")["Content-Location"]
    exporter.finish(status_url)

    response = exporter.fhir.get(status_url)

    assert response["Content-Type"] == "application/json"
    expires = parsedate_to_datetime(response["Expires"])
    assert abs((expires - datetime.now(timezone.utc)) - timedelta(seconds=600)) < timedelta(seconds=30)


def test_files_are_gone_after_expiry(exporter, export_storage, settings):
    settings.BULK_EXPORT_RETENTION_SECONDS = 3600
    status_url = exporter.kick_off("/fhir/$export?_type=Patient")["Content-Location"]
    manifest = exporter.finish(status_url)
    file_url = manifest["output"][0]["url"]
    later = datetime.now(timezone.utc) + timedelta(seconds=3601)

    with freeze_time(later - timedelta(seconds=120)):
        assert purge_expired_exports().exports == 0
        assert exporter.fhir.get(file_url).status_code == 200
    with freeze_time(later):
        assert_outcome(exporter.fhir.get(file_url), 404)  # expired, even before the purge ran
        report = purge_expired_exports()

    assert (report.exports, report.files) == (1, 3)
    assert stored_files(export_storage) == []
    assert not BulkExport.objects.exists() and not ExportFile.objects.exists()
    assert_gone(exporter, status_url)


def test_the_purge_removes_exports_that_ended_without_a_manifest_a_retention_ago(exporter, settings, export_storage):
    settings.BULK_EXPORT_RETENTION_SECONDS = 60
    status_url = exporter.kick_off("/fhir/$export?_type=Patient")["Content-Location"]
    while not ExportFile.objects.exists():
        exporter.bus.deliver_next()
    control.cancel_job(BulkExport.objects.get().job_instance_id)  # by an operator, not by DELETE: the files stay
    assert purge_expired_exports().exports == 0
    with freeze_time(datetime.now(timezone.utc) + timedelta(seconds=61)):
        assert purge_expired_exports().exports == 1

    assert stored_files(export_storage) == []
    assert_gone(exporter, status_url)


def test_a_cancelled_exports_files_are_deleted_at_once_not_at_expiry(exporter, export_storage):
    status_url = exporter.kick_off("/fhir/$export?_type=Patient")["Content-Location"]
    while not ExportFile.objects.exists():
        exporter.bus.deliver_next()
    control.cancel_job(BulkExport.objects.get().job_instance_id)  # by an operator, not by DELETE
    exporter.bus.drain()
    assert stored_files(export_storage)

    assert delete_files_of_ended_exports() >= 1

    assert stored_files(export_storage) == [] and not ExportFile.objects.exists()
    assert_gone(exporter, status_url)  # still answers as cancelled, until the purge removes the export


def test_a_running_or_completed_exports_files_are_kept(exporter, export_storage):
    exporter.export("/fhir/$export?_type=Patient")
    running = exporter.kick_off("/fhir/$export?_type=Observation")["Content-Location"]
    while ExportFile.objects.filter(resource_type="Observation").count() < 1:
        exporter.bus.deliver_next()

    assert delete_files_of_ended_exports() == 0
    assert len(stored_files(export_storage)) == ExportFile.objects.count() > 3
    exporter.finish(running)


def test_a_poll_of_an_export_that_failed_for_the_servers_reasons_shows_no_server_detail(exporter, monkeypatch):
    def broken_storage(path, content):
        raise OSError(f"disk full writing /srv/secret/{path}")

    monkeypatch.setattr("fhirjobs.bulkexport.files.write_file", broken_storage)
    status_url = exporter.kick_off("/fhir/$export?_type=Patient")["Content-Location"]
    exporter.bus.drain()
    assert JobInstance.objects.get().status == JobStatus.FAILED

    response = exporter.fhir.get(status_url)

    assert_outcome(response, 500, "failed on the server")
    assert b"/srv/secret" not in response.content and b"disk full" not in response.content


def test_the_purge_and_the_search_cleanup_are_clustered_scheduled_jobs():
    purge = scheduled_jobs.get("fhirstore.bulkexport.periodic.purge_expired_export_files")
    searches = scheduled_jobs.get("fhirstore.periodic.delete_expired_cached_searches")

    assert purge.clustered and purge.schedule.to_dict() == {"every_seconds": 3600}
    files = scheduled_jobs.get("fhirstore.bulkexport.periodic.delete_files_of_failed_and_cancelled_exports")
    assert files.clustered and files.schedule.to_dict() == {"every_seconds": 60}
    assert searches.clustered and searches.schedule.to_dict() == {"every_seconds": 60}
