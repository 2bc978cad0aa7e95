"""Issue #29 (low, PHI left behind): an ended import keeps neither the raw NDJSON its unfinished chunks held nor
its source credentials until the purge days later: a completed import's credentials go within a minute (a
clustered job), a failed or cancelled one's lines and credentials once its restart window is over, and a
client's cancel discards the chunks' data at once."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from batch import control
from batch.control import JobStatus
from batch.models import WorkChunk
from fhirjobs.bulkimport.models import BulkImport
from fhirjobs.bulkimport.services import discard_ended_import_data
from scheduling.registry import registry as scheduled_jobs
from tests.fhirjobs.bulkimport.helpers import write_ndjson

pytestmark = pytest.mark.django_db(transaction=True)

DISCARD_JOB = "fhirjobs.bulkimport.periodic.discard_ended_import_data_and_credentials"


@pytest.fixture
def patients_url(file_root) -> str:
    return write_ndjson(
        file_root / "Patient.ndjson", *({"resourceType": "Patient", "id": f"p{n}"} for n in range(3))
    ).as_uri()


def split_but_not_loaded(importer, url: str) -> tuple[BulkImport, str]:
    """Kicked off with a bearer token; its input split into load chunks that hold the raw lines. The import and
    its status URL."""
    response = importer.kick_off(url, credentialBearerToken="secret-token")
    assert response.status_code == 202, response.content
    importer.bus.deliver_next()  # list-files
    importer.bus.deliver_next()  # fetch-files: the load chunks, with the lines
    bulk_import = BulkImport.objects.get()
    assert bulk_import.request_headers == {"Authorization": "Bearer secret-token"}
    assert chunks_with_data(bulk_import)
    return bulk_import, response["Content-Location"]


def chunks_with_data(bulk_import: BulkImport) -> int:
    return WorkChunk.objects.filter(instance_id=bulk_import.job_instance_id, data__isnull=False).count()


def test_a_clients_cancel_discards_the_chunks_raw_lines_with_the_import(importer, patients_url):
    bulk_import, status_url = split_but_not_loaded(importer, patients_url)

    assert importer.fhir.delete(status_url).status_code == 202

    assert chunks_with_data(bulk_import) == 0
    assert not BulkImport.objects.exists()


def test_an_import_cancelled_by_an_operator_can_be_restarted_where_it_stopped_within_its_restart_window(
    importer, patients_url
):
    bulk_import, _ = split_but_not_loaded(importer, patients_url)
    control.cancel_job(bulk_import.job_instance_id)  # as an operator on /control would

    scheduled_jobs.get(DISCARD_JOB).function()

    assert chunks_with_data(bulk_import) and BulkImport.objects.get().request_headers
    control.restart_job(bulk_import.job_instance_id)
    importer.bus.drain()
    assert control.get_job(bulk_import.job_instance_id).status == JobStatus.COMPLETED


def test_after_its_restart_window_a_cancelled_import_loses_its_lines_and_credentials_and_cannot_resume(
    importer, patients_url, settings
):
    bulk_import, _ = split_but_not_loaded(importer, patients_url)
    control.cancel_job(bulk_import.job_instance_id)

    discard_ended_import_data(now=timezone.now() + timedelta(seconds=settings.BULK_IMPORT_RESTART_WINDOW_SECONDS + 1))

    assert chunks_with_data(bulk_import) == 0
    assert BulkImport.objects.get().request_headers == {}
    control.restart_job(bulk_import.job_instance_id)
    importer.bus.drain()
    job = control.get_job(bulk_import.job_instance_id)
    assert job.status == JobStatus.FAILED and "cannot be restarted where it stopped" in job.error_message


def test_a_completed_import_forgets_its_source_credentials_and_a_running_one_keeps_them(importer, patients_url):
    running, _ = split_but_not_loaded(importer, patients_url)
    scheduled_jobs.get(DISCARD_JOB).function()
    assert BulkImport.objects.get(id=running.id).request_headers, "still needed while the job runs"

    importer.bus.drain()
    assert control.get_job(running.job_instance_id).status == JobStatus.COMPLETED
    scheduled_jobs.get(DISCARD_JOB).function()

    assert BulkImport.objects.get(id=running.id).request_headers == {}
