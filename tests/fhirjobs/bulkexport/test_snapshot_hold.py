"""An export holds its types against expunges from its kick-off to its end (`fhirstore.snapshots`): the hold is
taken with its transactionTime, released when it completes, fails or is cancelled, taken again when it is
restarted, and an export whose hold lapsed fails rather than deliver files that might silently miss resources."""

from __future__ import annotations

import pytest
from django.db import connection

from batch import control
from batch.models import JobInstance
from batch.statuses import JobStatus
from fhirjobs.bulkexport.models import BulkExport
from fhirjobs.expunge.parameters import ExpungeRequest
from fhirjobs.expunge.services import expunge_instance
from fhirstore.expunge import ExpungeKinds
from fhirstore.models import SnapshotHold
from fhirstore.snapshots import snapshot_holds
from tests.fhirjobs.helpers import patient
from tests.fhirstore.helpers import delete, store

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


def test_a_group_export_holds_the_group_too_whose_members_it_reads_as_of_its_transaction_time(exporter):
    """An expunge of the Group's superseded versions would leave it no version of then: no members."""
    store({"resourceType": "Group", "id": "g1", "type": "person", "actual": True})
    exporter.kick_off("/fhir/Group/g1/$export?_type=Observation")

    assert SnapshotHold.objects.get().resource_types == ["Group", "Observation"]


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


def fail_by_a_lapse(exporter, url: str) -> JobInstance:
    exporter.kick_off(url)
    with connection.cursor() as cursor:
        cursor.execute("UPDATE fhirstore_snapshothold SET expires_at = now() - interval '1 second'")
    exporter.bus.drain()
    job = JobInstance.objects.get()
    assert job.status == JobStatus.FAILED and not SnapshotHold.objects.exists()
    return job


def test_a_restarted_export_holds_its_types_again_as_of_its_transaction_time(exporter):
    store(patient("p1"))
    job = fail_by_a_lapse(exporter, "/fhir/$export?_type=Patient")

    control.restart_job(job.id)

    held = SnapshotHold.objects.get()
    export = BulkExport.objects.get()
    assert (held.holder, held.resource_types, held.as_of) == (export.id, ["Patient"], export.transaction_time)
    assert snapshot_holds(["Patient"]) == [held], "live: expunges of Patient wait for it"
    exporter.bus.drain()
    assert JobInstance.objects.get().status == JobStatus.COMPLETED
    assert not SnapshotHold.objects.exists()


def test_a_restarted_export_whose_types_were_expunged_meanwhile_fails_again_saying_why(exporter):
    store(patient("p1"), patient("p2"))
    job = fail_by_a_lapse(exporter, "/fhir/$export?_type=Patient")
    delete("Patient", "p2")
    expunge_instance("Patient", "p2", ExpungeRequest(ExpungeKinds(deleted=True)))  # p2 existed at transactionTime

    control.restart_job(job.id)
    exporter.bus.drain()

    instance = JobInstance.objects.get()
    assert instance.status == JobStatus.FAILED, "its files would lack p2"
    assert "snapshot of the store lapsed" in instance.error_message
