"""Issue #25: a delete-expunge beside an export gives the export the store as at its transactionTime, through
real celery workers. The export's write step is held (its export row locked, as the export acceptance tests
hold it) while a delete-expunge of the very Observations it exports is started: the delete-expunge waits for
the export (its chunks poll), the export's files hold exactly the Observations of its transactionTime, and the
delete-expunge then deletes them all, and the one written after that instant."""

from __future__ import annotations

from collections import Counter

import pytest
from django.contrib.auth import get_user_model

from batch.models import JobInstance, WorkChunk
from batch.statuses import ChunkStatus, JobStatus
from fhirjobs.bulkexport.parameters import Level, parse_export_request
from fhirjobs.bulkexport.services import kick_off
from fhirjobs.deleteexpunge.parameters import DeleteExpungeRequest
from fhirjobs.deleteexpunge.services import start_delete_expunge
from fhirstore.models import SnapshotHold
from tests.fhirjobs.bulkexport.helpers import exported_ids
from tests.fhirjobs.deleteexpunge.helpers import keys_of, no_rows, observation, rows_of_keys
from tests.fhirstore.helpers import store
from tests.processes import locked_by_another_transaction, node_workers, wait_for_the_end, wait_until

pytestmark = [pytest.mark.acceptance, pytest.mark.django_db(transaction=True)]


def test_a_delete_expunge_beside_an_export_waits_for_it_and_the_export_holds_the_store_of_its_transaction_time(
    processes, node, settings
):
    settings.BULK_EXPORT_CHUNK_SIZE = 4  # three files
    settings.BULK_EXPORT_MAX_CONCURRENT_CHUNKS = 1  # the held chunk takes one worker: the other is free to delete
    store(*(observation(f"o{n}") for n in range(10)))
    owner = get_user_model().objects.create_user("exporter")
    export = kick_off(
        owner,
        parse_export_request(Level.SYSTEM, [("_type", "Observation")]),
        base_url="http://testserver/fhir",
        request_url="http://testserver/fhir/$export?_type=Observation",
    ).export
    store(observation("late"))  # after the transactionTime: not the export's, but the delete-expunge's
    every_key = keys_of("Observation")

    # A write chunk takes its export row FOR KEY SHARE: it waits, holding its chunk, until the block ends.
    with locked_by_another_transaction(f"SELECT id FROM bulkexport_bulkexport WHERE id = '{export.id}' FOR UPDATE"):
        node_workers(processes, node, "first", "second")
        deleting = start_delete_expunge(DeleteExpungeRequest(("Observation?",)), started_by="test")
        wait_until(
            lambda: (
                JobInstance.objects.get(id=deleting.id).status in (JobStatus.COMPLETED, JobStatus.FAILED)
                or WorkChunk.objects.filter(
                    instance_id=deleting.id, target_step_id="delete-expunge", status=ChunkStatus.POLL_WAITING
                ).exists()
            ),
            timeout=120,
            message=lambda: f"{JobInstance.objects.get(id=deleting.id)}",
        )
        assert JobInstance.objects.get(id=export.job_instance_id).status == JobStatus.IN_PROGRESS
        assert rows_of_keys(every_key)["resource"] == 11, "nothing of the export's types goes while it reads"

    exported = wait_for_the_end(export.job_instance_id, timeout=120)
    deleted = wait_for_the_end(deleting.id, timeout=120)

    assert exported.status == JobStatus.COMPLETED, exported.error_message
    assert exported_ids(exported.report) == Counter({("Observation", f"o{n}"): 1 for n in range(10)})
    assert deleted.status == JobStatus.COMPLETED, deleted.error_message
    assert deleted.report == {"deleted": {"Observation": 11}, "total": 11}
    assert deleted.end_time > exported.end_time
    assert rows_of_keys(every_key) == no_rows()
    assert not SnapshotHold.objects.exists(), "the export released its hold as it completed"
