"""Delete-expunge through real celery workers: a worker SIGKILLed in the middle of a delete chunk costs a
retry, and the job still deletes every row of every table exactly once and counts exactly."""
from __future__ import annotations


import pytest

from batch.models import WorkChunk
from batch.statuses import ChunkStatus, JobStatus
from fhirjobs.deleteexpunge.models import ExpungedChunk
from fhirjobs.deleteexpunge.parameters import DeleteExpungeRequest
from fhirjobs.deleteexpunge.services import start_delete_expunge
from fhirstore.loading import BulkLoader
from fhirstore.models import Resource
from fhirstore.synthetic import generate_resources
from tests.fhirjobs.deleteexpunge.helpers import no_rows, rows_of
from tests.processes import chunks_held_by, kill_while_it_holds, locked_by_another_transaction, node_workers, wait_for_the_end

pytestmark = [pytest.mark.acceptance, pytest.mark.django_db(transaction=True)]


def test_a_delete_expunge_with_a_worker_killed_mid_chunk_completes_exact(processes, node, settings):
    settings.DELETE_EXPUNGE_MAX_CONCURRENT_CHUNKS = 2  # a chunk for each worker: the doomed one is caught holding one
    with BulkLoader() as loader:
        for resource in generate_resources(patients=15, seed=7):
            loader.add(resource, "generated", None)
    types = ("DiagnosticReport", "Observation")
    before = {resource_type: Resource.objects.filter(resource_type=resource_type).count() for resource_type in types}
    others = rows_of("Patient")
    doomed, _ = node_workers(processes, node, "doomed", "survivor")

    # A delete chunk locks its rows first: with every Observation locked, it waits holding its chunk.
    with locked_by_another_transaction("SELECT id FROM fhirstore_resource WHERE resource_type = 'Observation'"
                                       " FOR UPDATE"):
        job = start_delete_expunge(DeleteExpungeRequest(tuple(f"{t}?" for t in types), batch_size=10),
                                   started_by="test")
        killed = kill_while_it_holds(doomed, chunks_held_by(doomed, job.id, "delete-expunge"), timeout=60)
    instance = wait_for_the_end(job.id, 120)

    assert instance.status == JobStatus.COMPLETED, instance.error_message
    killed.refresh_from_db()
    assert (killed.status, killed.attempts) == (ChunkStatus.COMPLETED, 2), "the killed chunk was run again"
    assert before["Observation"] > 100
    assert instance.report == {"deleted": {t: n for t, n in before.items() if n}, "total": sum(before.values())}
    assert instance.combined_records_processed >= sum(before.values())
    assert all(rows_of(resource_type) == no_rows() for resource_type in types)
    assert rows_of("Patient") == others
    assert ExpungedChunk.objects.filter(job_instance_id=job.id).count() == WorkChunk.objects.filter(
        instance_id=job.id, target_step_id="delete-expunge").count()
