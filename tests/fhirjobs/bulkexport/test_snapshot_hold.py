"""An export holds its types against expunges from its kick-off to its end (`fhirstore.snapshots`): the hold is
taken with its transactionTime, released when it completes, fails or is cancelled, and an export whose hold
lapsed fails rather than deliver files that might silently miss resources."""

from __future__ import annotations

import pytest
from django.db import connection

from batch.models import JobInstance
from batch.statuses import JobStatus
from fhirjobs.bulkexport.models import BulkExport
from fhirstore.models import SnapshotHold
from tests.fhirjobs.helpers import patient
from tests.fhirstore.helpers import store

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_kick_off_holds_the_types_it_reads_as_of_its_transaction_time_until_it_completes(exporter):
    store(patient("p1"))
    exporter.kick_off("/fhir/$export?_type=Patient,Observation")
    export = BulkExport.objects.get()
    held = SnapshotHold.objects.get()
    assert (held.holder, held.resource_types, held.as_of) == (
        export.id,
        ["Observation", "Patient"],
        export.transaction_time,
    )

    exporter.bus.drain()

    assert JobInstance.objects.get().status == JobStatus.COMPLETED
    assert not SnapshotHold.objects.exists()


def test_a_cancelled_export_releases_its_hold(exporter):
    status_url = exporter.kick_off("/fhir/$export?_type=Patient")["Content-Location"]
    exporter.fhir.delete(status_url)
    assert not SnapshotHold.objects.exists()


def test_an_export_whose_hold_lapsed_fails_and_says_why(exporter):
    store(patient("p1"))
    status_url = exporter.kick_off("/fhir/$export?_type=Patient")["Content-Location"]
    with connection.cursor() as cursor:
        cursor.execute("UPDATE fhirstore_snapshothold SET expires_at = now() - interval '1 second'")

    exporter.bus.drain()

    assert JobInstance.objects.get().status == JobStatus.FAILED
    response = exporter.fhir.get(status_url)
    assert response.status_code == 500
    assert "snapshot of the store lapsed" in response.content.decode()
    assert not SnapshotHold.objects.exists(), "released as it failed"
