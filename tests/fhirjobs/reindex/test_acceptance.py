"""Reindex through real celery workers: the automatic reindex of a SearchParameter on Synthea data, and a
`$reindex` that survives a worker killed with SIGKILL in the middle of it."""

from __future__ import annotations

import signal

import pytest
from django.db import connection

from batch.statuses import ChunkStatus, JobStatus
from fhirjobs.bulkimport.inline import load_paths
from fhirjobs.reindex.parameters import ReindexRequest
from fhirjobs.reindex.services import start_reindex
from fhirstore.loading import BulkLoader
from fhirstore.models import CustomSearchParameter, Resource
from fhirstore.synthetic import generate_resources
from tests.fhirjobs.helpers import BIRTH_SEX, patient
from tests.fhirjobs.reindex.helpers import INDEX_TABLES, index_snapshot, search_parameter
from tests.fhirstore.helpers import SYNTHEA_NDJSON, assert_outcome, store
from tests.processes import (
    chunks_held_by,
    kill_while_it_holds,
    locked_by_another_transaction,
    node_workers,
    wait_for_the_end,
)

pytestmark = [pytest.mark.acceptance, pytest.mark.django_db(transaction=True)]


def birth_sex_by_scan(code: str) -> set[str]:
    return {
        body["id"]
        for body in Resource.objects.filter(resource_type="Patient", deleted=False).values_list("body", flat=True)
        if any(e.get("url") == BIRTH_SEX and e.get("valueCode") == code for e in body.get("extension", []))
    }


def searched(client, query: str) -> set[str]:
    response = client.get(f"/fhir/Patient?{query}&_count=1000")
    assert response.status_code == 200, response.content
    return {entry["resource"]["id"] for entry in response.json().get("entry", [])}


def test_a_search_parameter_on_the_synthea_birth_sex_extension_follows_its_automatic_reindexes(
    processes, node, operator
):
    assert not load_paths([SYNTHEA_NDJSON]).bad
    store(patient("f1", birth_sex="F"), patient("f2", birth_sex="F"), patient("none"))
    (worker,) = node_workers(processes, node, "worker")

    worker.signal_group(signal.SIGSTOP)  # frozen: its reindex cannot end before the search below, however slow this is
    sp_id = operator.post("/fhir/SearchParameter", search_parameter()).json()["id"]
    assert_outcome(operator.get("/fhir/Patient?birthsex=M"), 400, "is being indexed")
    worker.signal_group(signal.SIGCONT)
    assert wait_for_the_end(CustomSearchParameter.objects.get().reindex_job_id, 120).status == JobStatus.COMPLETED
    assert searched(operator, "birthsex=M") == birth_sex_by_scan("M") and len(birth_sex_by_scan("M")) == 3
    assert searched(operator, "birthsex=F") == birth_sex_by_scan("F") == {"f1", "f2"}

    operator.put(
        f"/fhir/SearchParameter/{sp_id}",
        {**search_parameter(expression=f"Patient.extension.where(url='{BIRTH_SEX}').exists()"), "id": sp_id},
    )
    assert wait_for_the_end(CustomSearchParameter.objects.get().reindex_job_id, 120).status == JobStatus.COMPLETED
    assert searched(operator, "birthsex=true") == birth_sex_by_scan("M") | birth_sex_by_scan("F")
    assert searched(operator, "birthsex=false") == {"none"}

    operator.delete(f"/fhir/SearchParameter/{sp_id}")
    assert_outcome(operator.get("/fhir/Patient?birthsex=true"), 400, "Unknown search parameter")


@pytest.mark.parametrize("in_database", ["false", "true"], ids=["python", "sql"])
def test_a_reindex_with_a_worker_killed_mid_way_completes_and_equals_a_fresh_rebuild(
    processes, node, settings, in_database
):
    settings.REINDEX_MAX_CONCURRENT_CHUNKS = 2  # a chunk for each worker: the doomed one can be caught holding one
    with BulkLoader() as loader:
        for resource in generate_resources(patients=15, seed=7):
            loader.add(resource, "generated", None)
    fresh = index_snapshot(resource_type="Observation")
    with connection.cursor() as cursor:
        for model in INDEX_TABLES:
            cursor.execute(f"DELETE FROM {model._meta.db_table} WHERE resource_type = 'Observation'")
    doomed, _ = node_workers(processes, node, "doomed", "survivor", FHIR_INDEX_IN_DATABASE=in_database)

    # A reindex chunk locks the rows it corrects: with every Observation row locked, it waits holding its chunk.
    every_observation = "SELECT id FROM fhirstore_resource WHERE resource_type = 'Observation' FOR UPDATE"
    with locked_by_another_transaction(every_observation):
        job = start_reindex(ReindexRequest(("Observation?",), batch_size=10), started_by="test")
        killed = kill_while_it_holds(doomed, chunks_held_by(doomed, job.id, "reindex"), timeout=60)
    instance = wait_for_the_end(job.id, 120)

    assert instance.status == JobStatus.COMPLETED, instance.error_message
    killed.refresh_from_db()
    assert (killed.status, killed.attempts) == (ChunkStatus.COMPLETED, 2), "the killed chunk was run again"
    assert sum(map(len, fresh.values())) > 1000
    assert index_snapshot(resource_type="Observation") == fresh
    assert sum(model.objects.filter(resource_type="Observation").count() for model in INDEX_TABLES) == sum(
        map(len, fresh.values())
    ), "no row twice"
