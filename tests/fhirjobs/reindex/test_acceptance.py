"""Reindex through real celery workers: the automatic reindex of a SearchParameter on Synthea data, and a
`$reindex` that survives a worker killed with SIGKILL in the middle of it."""
from __future__ import annotations

import signal
import uuid

import pytest
from django.db import connection

from batch.maintenance import run_maintenance_pass
from batch.models import JobInstance, WorkChunk
from batch.queues import work_notification_queue
from batch.statuses import ChunkStatus, JobStatus
from fhirjobs.bulkimport.inline import load_paths
from fhirstore.loading import BulkLoader
from fhirstore.models import CustomSearchParameter, Resource
from fhirjobs.reindex.parameters import ReindexRequest
from fhirjobs.reindex.services import start_reindex
from fhirstore.synthetic import generate_resources
from tests.fhirjobs.reindex.helpers import BIRTH_SEX, INDEX_TABLES, index_snapshot, patient, search_parameter
from tests.fhirstore.helpers import SYNTHEA_NDJSON, assert_outcome, store
from tests.processes import Process, celery_worker, kill_while_it_holds, locked_by_another_transaction, wait_until

pytestmark = [pytest.mark.acceptance, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def node(settings) -> str:
    """This test's node: the jobs it starts go to this node's queue, which its workers consume."""
    settings.NODE_ID = f"test-{uuid.uuid4().hex[:8]}"
    settings.BATCH_REANNOUNCE_AFTER_SECONDS = 1
    return settings.NODE_ID


def start_workers(processes, node: str, *names: str) -> list[Process]:
    environment = {"NODE_ID": node, "JOB_SCHEDULING": "false", "BATCH_LEASE_SECONDS": "3"}
    started = [celery_worker(env=environment, queues=[work_notification_queue(node)], concurrency=1, name=name)
               for name in names]
    processes.extend(started)
    return started


def wait_for_the_end(job_id, timeout: float = 120) -> JobInstance:
    """Runs the maintenance pass (beat's job) meanwhile: it retries the chunks whose worker stopped renewing."""
    return wait_until(lambda: (instance := JobInstance.objects.get(id=job_id)).status in (
        JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED) and instance, timeout,
        while_waiting=run_maintenance_pass, message=lambda: f"the reindex: {JobInstance.objects.get(id=job_id)}")


def birth_sex_by_scan(code: str) -> set[str]:
    return {body["id"] for body in Resource.objects.filter(resource_type="Patient", deleted=False)
            .values_list("body", flat=True)
            if any(e.get("url") == BIRTH_SEX and e.get("valueCode") == code for e in body.get("extension", []))}


def searched(client, query: str) -> set[str]:
    response = client.get(f"/fhir/Patient?{query}&_count=1000")
    assert response.status_code == 200, response.content
    return {entry["resource"]["id"] for entry in response.json().get("entry", [])}


def test_a_search_parameter_on_the_synthea_birth_sex_extension_follows_its_automatic_reindexes(
        processes, node, operator):
    assert not load_paths([SYNTHEA_NDJSON]).bad
    store(patient("f1", "F"), patient("f2", "F"), patient("none"))
    worker, = start_workers(processes, node, "worker")

    worker.signal_group(signal.SIGSTOP)  # frozen: its reindex cannot end before the search below, however slow this is
    sp_id = operator.post("/fhir/SearchParameter", search_parameter()).json()["id"]
    assert_outcome(operator.get("/fhir/Patient?birthsex=M"), 400, "is being indexed")
    worker.signal_group(signal.SIGCONT)
    assert wait_for_the_end(CustomSearchParameter.objects.get().reindex_job_id).status == JobStatus.COMPLETED
    assert searched(operator, "birthsex=M") == birth_sex_by_scan("M") and len(birth_sex_by_scan("M")) == 3
    assert searched(operator, "birthsex=F") == birth_sex_by_scan("F") == {"f1", "f2"}

    operator.put(f"/fhir/SearchParameter/{sp_id}", {
        **search_parameter(expression=f"Patient.extension.where(url='{BIRTH_SEX}').exists()"), "id": sp_id})
    assert wait_for_the_end(CustomSearchParameter.objects.get().reindex_job_id).status == JobStatus.COMPLETED
    assert searched(operator, "birthsex=true") == birth_sex_by_scan("M") | birth_sex_by_scan("F")
    assert searched(operator, "birthsex=false") == {"none"}

    operator.delete(f"/fhir/SearchParameter/{sp_id}")
    assert_outcome(operator.get("/fhir/Patient?birthsex=true"), 400, "Unknown search parameter")


def test_a_reindex_with_a_worker_killed_mid_way_completes_and_equals_a_fresh_rebuild(processes, node, settings):
    settings.REINDEX_MAX_CONCURRENT_CHUNKS = 2  # a chunk for each worker: the doomed one can be caught holding one
    with BulkLoader() as loader:
        for resource in generate_resources(patients=15, seed=7):
            loader.add(resource, "generated", None)
    fresh = index_snapshot(resource_type="Observation")
    with connection.cursor() as cursor:
        for model in INDEX_TABLES:
            cursor.execute(f"DELETE FROM {model._meta.db_table} WHERE resource_type = 'Observation'")
    doomed, _ = start_workers(processes, node, "doomed", "survivor")

    # A reindex chunk locks the rows it corrects: with every Observation row locked, it waits holding its chunk.
    every_observation = "SELECT id FROM fhirstore_resource WHERE resource_type = 'Observation' FOR UPDATE"
    with locked_by_another_transaction(every_observation):
        job = start_reindex(ReindexRequest(("Observation?",), batch_size=10), started_by="test")
        killed = kill_while_it_holds(doomed, WorkChunk.objects.filter(
            instance_id=job.id, status=ChunkStatus.IN_PROGRESS, target_step_id="reindex",
            worker__startswith=doomed.name + "-"), timeout=60)
    instance = wait_for_the_end(job.id)

    assert instance.status == JobStatus.COMPLETED, instance.error_message
    killed.refresh_from_db()
    assert (killed.status, killed.attempts) == (ChunkStatus.COMPLETED, 2), "the killed chunk was run again"
    assert sum(map(len, fresh.values())) > 1000
    assert index_snapshot(resource_type="Observation") == fresh
