"""Issue #29 (low): a BULK_IMPORT job acts only on the import row its kick-off created with it; a job started by
hand (POST /control/jobs) with another user's import_id fails instead of using that row's owner, credentials and
authority."""

from __future__ import annotations

import pytest

from batch import control
from batch.control import JobStatus
from fhirjobs.bulkimport.models import BulkImport
from fhirstore.models import Resource
from tests.fhirjobs.bulkimport.helpers import write_ndjson

pytestmark = pytest.mark.django_db(transaction=True)


def test_an_import_job_started_with_another_imports_id_fails(importer_client, bus, file_root):
    url = write_ndjson(file_root / "Patient.ndjson", {"resourceType": "Patient", "id": "p"}).as_uri()
    status_url = importer_client.post(
        "/fhir/$import",
        {"resourceType": "Parameters", "parameter": [{"name": "input", "part": [{"name": "url", "valueUri": url}]}]},
        HTTP_PREFER="respond-async",
    )["Content-Location"]
    victim = BulkImport.objects.get()
    assert status_url.endswith(str(victim.id))
    control.cancel_job(victim.job_instance_id)

    forged = control.start_job(
        "BULK_IMPORT",
        {"import_id": str(victim.id), "inputs": [{"url": url}], "base_url": "http://testserver/fhir"},
        started_by="mallory",
    )
    bus.drain()

    job = control.get_job(forged.id)
    assert job.status == JobStatus.FAILED and "belongs to another job" in job.error_message
    assert not Resource.objects.exists()
