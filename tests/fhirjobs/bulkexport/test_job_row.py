"""Issue #29 (low): a BULK_EXPORT job writes only the export row its kick-off created with it; a job started by
hand (POST /control/jobs) with another user's export_id fails instead of filling that export."""

from __future__ import annotations

import pytest

from batch import control
from batch.control import JobStatus
from fhirjobs.bulkexport.models import BulkExport, ExportFile
from tests.fhirjobs.helpers import patient
from tests.fhirstore.helpers import store

pytestmark = pytest.mark.django_db(transaction=True)


def test_an_export_job_started_with_another_exports_id_fails(exporter, bus):
    store(patient("p1"))
    exporter.kick_off("/fhir/$export?_type=Patient")
    victim = BulkExport.objects.get()
    bus.drain()
    files_before = set(ExportFile.objects.values_list("id", flat=True))
    job = control.get_job(victim.job_instance_id)

    forged = control.start_job("BULK_EXPORT", dict(job.parameters), started_by="mallory")
    bus.drain()

    forged_job = control.get_job(forged.id)
    assert forged_job.status == JobStatus.FAILED and "belongs to another job" in forged_job.error_message
    assert set(ExportFile.objects.values_list("id", flat=True)) == files_before
