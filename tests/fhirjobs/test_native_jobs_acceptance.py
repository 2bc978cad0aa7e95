"""Issue #25's acceptance, through real celery workers: a worker SIGKILLed in the middle of a delete-expunge, of
an asynchronous merge, of a bulk patch and of a type's `$expunge` costs the killed chunk a retry, and each job
still completes exactly: nothing deleted twice or left behind (every table counted), no resource patched or
rewritten twice (version numbers), the merge's Task and Provenance exact, the expunge's count exact.

The workers start once, together, for the module: a survivor consuming the three jobs' node queues and, per
job, a doomed worker consuming its own node's queue only, so each test has exactly two workers (the survivor
and the one it kills) however the others fared. Each job's chunks wait on a lock this test holds on every
Observation row, so the doomed worker is caught holding one (`kill_while_it_holds`).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from batch import control
from batch.models import WorkChunk
from batch.queues import work_notification_queue
from batch.statuses import ChunkStatus, JobStatus
from fhirjobs.bulkpatch.models import PatchedResource
from fhirjobs.bulkpatch.services import start_bulk_patch
from fhirjobs.deleteexpunge.models import ExpungedChunk
from fhirjobs.deleteexpunge.parameters import DeleteExpungeRequest
from fhirjobs.deleteexpunge.services import start_delete_expunge
from fhirjobs.expunge.definition import EXPUNGE_JOB
from fhirjobs.expunge.models import ExpungedVersionsChunk
from fhirjobs.merge.models import MergedChunk
from fhirjobs.merge.parameters import MergeRequest
from fhirjobs.merge.services import merge_patients
from fhirstore.loading import BulkLoader
from fhirstore.models import Resource, ResourceVersion
from fhirstore.storage import read_resource
from fhirstore.synthetic import generate_resources
from tests.fhirjobs.bulkpatch.helpers import replace
from tests.fhirjobs.deleteexpunge.helpers import keys_of, no_rows, rows_of, rows_of_keys
from tests.fhirjobs.helpers import patient
from tests.fhirjobs.merge.helpers import observation, output
from tests.fhirstore.helpers import store
from tests.processes import (
    Process,
    celery_worker,
    chunks_held_by,
    kill_while_it_holds,
    locked_by_another_transaction,
    start_all,
    stop_all,
    wait_for_the_end,
    wait_until_ready,
)

pytestmark = [pytest.mark.acceptance, pytest.mark.django_db(transaction=True)]

JOBS = ("delete-expunge", "merge", "bulk-patch", "expunge")
EVERY_OBSERVATION_LOCKED = "SELECT id FROM fhirstore_resource WHERE resource_type = 'Observation' FOR UPDATE"
EVERY_PREVIOUS_VERSION_LOCKED = "SELECT resource_id FROM fhirstore_resourceversion FOR UPDATE"


@pytest.fixture(scope="module")
def workers(django_db_setup, django_db_blocker) -> Iterator[dict[str, tuple[str, Process]]]:
    """`{job: (node, doomed worker)}`, and a survivor consuming every node's queue; started in parallel."""
    nodes = {job: f"test-{uuid.uuid4().hex[:8]}" for job in JOBS}
    environment = {"JOB_SCHEDULING": "false", "BATCH_LEASE_SECONDS": "3"}
    started: list[Process] = []
    try:
        with django_db_blocker.unblock():
            survivor = celery_worker(
                env={**environment, "NODE_ID": nodes[JOBS[0]]},
                concurrency=1,
                name="survivor",
                queues=[work_notification_queue(node) for node in nodes.values()],
                wait=False,
            )
            started.append(survivor)
            doomed = {
                job: celery_worker(
                    env={**environment, "NODE_ID": node},
                    queues=[work_notification_queue(node)],
                    concurrency=1,
                    name=f"doomed-{job}",
                    wait=False,
                )
                for job, node in nodes.items()
            }
            started += doomed.values()
            start_all(started, wait_until_ready)
        yield {job: (nodes[job], doomed[job]) for job in JOBS}
    finally:
        stop_all(started)


def on_node(settings, workers, job: str) -> Process:
    """The job starts on its node (whose queue its doomed worker and the survivor consume); its doomed worker."""
    node, doomed = workers[job]
    settings.NODE_ID = node
    settings.BATCH_REANNOUNCE_AFTER_SECONDS = 1
    return doomed


def assert_run_again(killed: WorkChunk) -> None:
    killed.refresh_from_db()
    assert (killed.status, killed.attempts) == (ChunkStatus.COMPLETED, 2), "the killed chunk was run again"


def load(resources) -> None:
    with BulkLoader() as loader:
        for resource in resources:
            loader.add(resource, "generated", None)


def observation_versions() -> dict[str, int]:
    return dict(Resource.objects.filter(resource_type="Observation").values_list("logical_id", "version_id"))


def test_a_delete_expunge_with_a_worker_killed_mid_chunk_deletes_every_row_once(workers, settings):
    doomed = on_node(settings, workers, "delete-expunge")
    settings.DELETE_EXPUNGE_MAX_CONCURRENT_CHUNKS = 2  # a chunk for each worker: the doomed one is caught holding one
    load(generate_resources(patients=15, seed=7))
    types = ("DiagnosticReport", "Observation")
    before = {resource_type: Resource.objects.filter(resource_type=resource_type).count() for resource_type in types}
    deleted_keys = [pk for resource_type in types for pk in keys_of(resource_type)]
    others = rows_of("Patient")

    with locked_by_another_transaction(EVERY_OBSERVATION_LOCKED):  # a delete chunk locks its rows first
        job = start_delete_expunge(
            DeleteExpungeRequest(tuple(f"{t}?" for t in types), batch_size=50), started_by="test"
        )
        killed = kill_while_it_holds(doomed, chunks_held_by(doomed, job.id, "delete-expunge"), timeout=60)
    instance = wait_for_the_end(job.id, 120)

    assert instance.status == JobStatus.COMPLETED, instance.error_message
    assert_run_again(killed)
    assert before["Observation"] > 100
    assert instance.report == {"deleted": {t: n for t, n in before.items() if n}, "total": sum(before.values())}
    assert rows_of_keys(deleted_keys) == no_rows()  # every table, the index rows of the deleted resources included
    assert rows_of("Patient") == others
    assert (
        ExpungedChunk.objects.filter(job_instance_id=job.id).count()
        == WorkChunk.objects.filter(instance_id=job.id, target_step_id="delete-expunge").count()
    )


def test_an_async_merge_with_a_worker_killed_mid_page_rewrites_each_referrer_once_with_an_exact_task(workers, settings):
    doomed = on_node(settings, workers, "merge")
    referrers = 120
    load(
        [
            patient("src", "A1"),
            patient("tgt", "B1"),
            *(observation(f"o{n:03}", "Patient/src") for n in range(referrers)),
        ]
    )

    with locked_by_another_transaction(EVERY_OBSERVATION_LOCKED):  # a page's writes lock its rows
        answer = merge_patients(
            MergeRequest(source_id="src", target_id="tgt", batch_size=10), started_by="test", asynchronous=True
        )
        task = output(answer.body, "task")
        job_id = task["identifier"][0]["value"]
        killed = kill_while_it_holds(doomed, chunks_held_by(doomed, job_id, "replace-references"), timeout=60)
    instance = wait_for_the_end(job_id, 120)

    assert instance.status == JobStatus.COMPLETED, instance.error_message
    assert_run_again(killed)
    assert observation_versions() == {f"o{n:03}": 2 for n in range(referrers)}  # each rewritten once
    assert all(
        body["subject"] == {"reference": "Patient/tgt"}
        for body in Resource.objects.filter(resource_type="Observation").values_list("body", flat=True)
    )
    [provenance] = Resource.objects.filter(resource_type="Provenance")
    provenance_targets = [target["reference"] for target in provenance.body["target"]]
    assert sorted(provenance_targets) == sorted(
        [
            "Patient/src/_history/2",
            "Patient/tgt/_history/2",
            *(f"Observation/o{n:03}/_history/2" for n in range(referrers)),
        ]
    )
    done = read_resource("Task", task["id"])
    assert (done.version_id, done.body["status"]) == (2, "completed")
    assert {
        item["type"]["text"]: item.get("valueReference", item.get("valueInteger")) for item in done.body["output"]
    } == {
        "result-patient": {"reference": "Patient/tgt/_history/2"},
        "provenance": {"reference": f"Provenance/{provenance.logical_id}"},
        "resources-updated": referrers,
    }
    assert instance.report == {
        "updated": {"Observation": referrers},
        "total": referrers,
        "provenance": f"Provenance/{provenance.logical_id}",
        "task": f"Task/{task['id']}",
        "target": "Patient/tgt",
    }
    assert MergedChunk.objects.filter(job_instance_id=job_id).count() == referrers // 10


def test_a_bulk_patch_with_a_worker_killed_mid_page_patches_each_match_once(workers, settings):
    doomed = on_node(settings, workers, "bulk-patch")
    matches = 120
    load(observation(f"o{n:03}", "Patient/p") for n in range(matches))

    with locked_by_another_transaction(EVERY_OBSERVATION_LOCKED):  # a page's writes lock its rows
        job = start_bulk_patch(
            {
                "urls": ["Observation?status=final"],
                "batch_size": 10,
                "patch": replace("Observation.status", valueCode="amended"),
            },
            started_by="test",
        )
        killed = kill_while_it_holds(doomed, chunks_held_by(doomed, job.id, "patch"), timeout=60)
    instance = wait_for_the_end(job.id, 120)

    assert instance.status == JobStatus.COMPLETED, instance.error_message
    assert_run_again(killed)
    assert observation_versions() == {f"o{n:03}": 2 for n in range(matches)}  # each patched once
    assert {
        body["status"] for body in Resource.objects.filter(resource_type="Observation").values_list("body", flat=True)
    } == {"amended"}
    assert instance.report == {
        "dry_run": False,
        "patched": {"Observation": matches},
        "total": matches,
        "unchanged": 0,
        "failed_count": 0,
        "failed": {},
        "diffs": [],
    }
    assert PatchedResource.objects.filter(job_instance_id=job.id).count() == matches


def test_a_type_expunge_with_a_worker_killed_mid_page_deletes_every_previous_version_once(workers, settings):
    doomed = on_node(settings, workers, "expunge")
    resources = 120
    load(observation(f"o{n:03}", "Patient/p") for n in range(resources))
    for status in ("amended", "corrected"):  # two previous versions each
        store(*({**observation(f"o{n:03}", "Patient/p"), "status": status} for n in range(resources)))
    before = rows_of("Observation")
    assert before["version"] == 2 * resources

    with locked_by_another_transaction(EVERY_PREVIOUS_VERSION_LOCKED):  # a page's DELETE waits on its versions
        job = control.start_job(
            EXPUNGE_JOB,
            {"urls": ["Observation?"], "previous_versions": True, "batch_size": 10},
            started_by="test",
            max_concurrent_chunks=2,
        )
        killed = kill_while_it_holds(doomed, chunks_held_by(doomed, job.id, "expunge"), timeout=60)
    instance = wait_for_the_end(job.id, 120)

    assert instance.status == JobStatus.COMPLETED, instance.error_message
    assert_run_again(killed)
    assert instance.report == {"count": 2 * resources}  # each version counted once
    assert rows_of("Observation") == {**before, "version": 0}  # the current rows and their index rows stay
    assert ResourceVersion.objects.count() == 0
    assert observation_versions() == {f"o{n:03}": 3 for n in range(resources)}
    assert {
        body["status"] for body in Resource.objects.filter(resource_type="Observation").values_list("body", flat=True)
    } == {"corrected"}
    assert (
        ExpungedVersionsChunk.objects.filter(job_instance_id=job.id).count()
        == WorkChunk.objects.filter(instance_id=job.id, target_step_id="expunge").count()
        == resources // 10
    )
