"""The export through real processes: a live web server, real celery workers, a real Bulk Data client.

`smart-fetch` (the SMART/Cumulus client, unchanged) exports the Synthea fixtures over HTTP, and what it
downloaded is compared with the store resource by resource. A worker killed with SIGKILL in the middle of
an export costs a retry, never a lost or duplicated resource.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path
from urllib.parse import urlencode

import psycopg
import pytest
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.utils import timezone
from smart_fetch.resources import PATIENT_TYPES as SMART_FETCH_DEFAULT_TYPES

from batch.models import JobInstance, WorkChunk
from batch.queues import work_notification_queue
from batch.statuses import ChunkStatus, JobStatus
from fhirjobs.bulkexport.models import BulkExport
from fhirjobs.bulkexport.parameters import Level, parse_export_request
from fhirjobs.bulkexport.services import kick_off
from fhirjobs.bulkimport.inline import load_paths
from fhirstore.loading import BulkLoader
from fhirstore.models import Resource
from fhirstore.synthetic import generate_resources
from jobsite.tokens import token_for
from tests.fhirjobs.bulkexport.helpers import exported_ids, observation
from tests.fhirjobs.helpers import patient
from tests.fhirstore.helpers import SYNTHEA_BUNDLES, SYNTHEA_NDJSON, delete, store
from tests.processes import (
    Process,
    celery_beat,
    celery_worker,
    free_port,
    kill_while_it_holds,
    scheduler_worker,
    start_all,
    subprocess_database_url,
    wait_until,
    wait_until_beating,
    wait_until_ready,
)

pytestmark = [pytest.mark.acceptance, pytest.mark.django_db(transaction=True)]

SMART_FETCH = str(Path(sys.executable).parent / "smart-fetch")
# smart-fetch's default Observation filter (filtering.Filters, for servers other than Epic).
DEFAULT_OBSERVATION_CATEGORIES = {
    "social-history",
    "vital-signs",
    "imaging",
    "laboratory",
    "survey",
    "exam",
    "procedure",
    "therapy",
    "activity",
}
EXPORTED_TYPES = ("Patient", "Encounter", "Condition", "Immunization", "MedicationRequest", "Observation", "Procedure")


def node_environment(node: str, **extra: str) -> dict[str, str]:
    """A node of its own; its export files go to the default storage, the test database."""
    return {"NODE_ID": node, "JOB_SCHEDULING": "false", **extra}


def store_bodies(resource_type: str) -> dict[str, dict]:
    return dict(Resource.objects.filter(resource_type=resource_type, deleted=False).values_list("logical_id", "body"))


def read_downloads(directory: Path) -> dict[str, list[dict]]:
    downloaded: dict[str, list[dict]] = {}
    for path in sorted(directory.glob("*.ndjson.gz")):
        with gzip.open(path, "rt") as lines:
            downloaded.setdefault(path.name.split(".")[0], []).extend(
                json.loads(line) for line in lines if line.strip()
            )
    return downloaded


def test_smart_fetch_exports_the_synthea_fixtures_over_http_and_gets_exactly_the_store(
    processes, tmp_path, export_storage
):
    report = load_paths([SYNTHEA_NDJSON, SYNTHEA_BUNDLES])
    assert not report.bad
    store(observation("outside-default-filter", "ghost", category="uncategorized-xyz"))
    some_condition = Resource.objects.filter(resource_type="Condition").values_list("logical_id", flat=True).first()
    delete("Condition", some_condition)
    output = tmp_path / "out"

    smart_fetch = SmartFetch.serving(processes, tmp_path)
    downloaded = smart_fetch.bulk(output, "--type", ",".join(EXPORTED_TYPES))

    assert set(downloaded) == set(EXPORTED_TYPES)
    for resource_type in EXPORTED_TYPES:
        expected = store_bodies(resource_type)
        if resource_type == "Observation":
            expected = {logical_id: body for logical_id, body in expected.items() if _in_default_categories(body)}
            assert "outside-default-filter" not in expected
        resources = downloaded[resource_type]
        assert Counter(resource["id"] for resource in resources).most_common(1)[0][1] == 1, resource_type
        assert {resource["id"]: resource for resource in resources} == expected, resource_type
    assert some_condition not in {resource["id"] for resource in downloaded["Condition"]}
    # smart-fetch DELETEs the export once it has the files: nothing is left on the server.
    assert not BulkExport.objects.exists()
    assert export_storage.names() == []


def test_smart_fetch_with_until_in_its_url_gets_the_store_as_it_was_then(processes, tmp_path, export_storage):
    """smart-fetch (1.0.3) has no `_until` option, but keeps the query of its `--fhir-url` in the kick-off (system
    level only: it builds its Group URL by appending to the base). Changes after `_until` are left out: the
    changed Condition comes in its version of then, the deleted one still comes, the new Patient does not."""
    report = load_paths([SYNTHEA_NDJSON, SYNTHEA_BUNDLES])
    assert not report.bad
    expected = {resource_type: store_bodies(resource_type) for resource_type in ("Condition", "Patient")}
    until = timezone.now()
    changed, removed = sorted(expected["Condition"])[:2]
    store({**expected["Condition"][changed], "note": [{"text": "written after _until"}]})
    delete("Condition", removed)
    store(patient("born-after-until"))
    output = tmp_path / "out"

    smart_fetch = SmartFetch.serving(processes, tmp_path)
    downloaded = smart_fetch.bulk(
        output, "--type", "Condition,Patient", query=urlencode({"_until": until.strftime("%Y-%m-%dT%H:%M:%S.%fZ")})
    )

    for resource_type, bodies in expected.items():
        resources = downloaded[resource_type]
        assert len(resources) == len({resource["id"] for resource in resources}), resource_type
        assert {resource["id"]: resource for resource in resources} == bodies, resource_type


def test_smart_fetch_default_group_export_gets_exactly_the_members_patient_compartments(
    processes, tmp_path, export_storage
):
    """No `--type`: smart-fetch asks for its own US Core list (MedicationDispense, Specimen, Device, …)."""
    report = load_paths([SYNTHEA_NDJSON])
    assert not report.bad
    patients = sorted(Resource.objects.filter(resource_type="Patient").values_list("logical_id", flat=True))
    members, outsider = patients[:-1], patients[-1]
    for patient_id in patients:
        store(
            {
                "resourceType": "MedicationDispense",
                "id": f"dispense-{patient_id}",
                "status": "completed",
                "medicationCodeableConcept": {"text": "aspirin"},
                "subject": {"reference": f"Patient/{patient_id}"},
            },
            {
                "resourceType": "Specimen",
                "id": f"specimen-{patient_id}",
                "subject": {"reference": f"Patient/{patient_id}"},
            },
            {
                "resourceType": "ServiceRequest",
                "id": f"request-{patient_id}",
                "status": "active",
                "intent": "order",
                "subject": {"reference": f"Patient/{patient_id}"},
            },
            {
                "resourceType": "EpisodeOfCare",
                "id": f"episode-{patient_id}",
                "status": "active",
                "patient": {"reference": f"Patient/{patient_id}"},
            },
        )
    store(
        {
            "resourceType": "Group",
            "id": "cohort",
            "type": "person",
            "actual": True,
            "member": [{"entity": {"reference": f"Patient/{patient_id}"}} for patient_id in members],
        }
    )

    smart_fetch = SmartFetch.serving(processes, tmp_path)
    downloaded = smart_fetch.bulk(tmp_path / "out", "--group", "cohort")

    member_references = {f"Patient/{patient_id}" for patient_id in members}
    expected_types = set()
    for resource_type in SMART_FETCH_DEFAULT_TYPES:
        expected = {
            logical_id: body
            for logical_id, body in store_bodies(resource_type).items()
            if (resource_type == "Patient" and logical_id in members) or member_references & set(_references_in(body))
        }
        if resource_type == "Observation":
            expected = {logical_id: body for logical_id, body in expected.items() if _in_default_categories(body)}
        if expected:
            expected_types.add(resource_type)
        resources = downloaded.get(resource_type, [])
        assert len(resources) == len({resource["id"] for resource in resources}), resource_type
        assert {resource["id"]: resource for resource in resources} == expected, resource_type
    assert {"MedicationDispense", "Specimen", "ServiceRequest", "EpisodeOfCare", "Device"} <= expected_types
    assert set(downloaded) == expected_types
    assert f"dispense-{outsider}" not in {resource["id"] for resource in downloaded["MedicationDispense"]}


def _references_in(node: object):
    """Every `reference` anywhere in a resource: an oracle for "points at a member" independent of the index."""
    if isinstance(node, dict):
        if isinstance(node.get("reference"), str):
            yield node["reference"]
        for value in node.values():
            yield from _references_in(value)
    elif isinstance(node, list):
        for value in node:
            yield from _references_in(value)


def _in_default_categories(observation: dict) -> bool:
    return bool(
        {coding["code"] for category in observation.get("category", []) for coding in category["coding"]}
        & DEFAULT_OBSERVATION_CATEGORIES
    )


class SmartFetch:
    """smart-fetch (unchanged) against a live gunicorn and a real celery worker of a node of their own."""

    def __init__(self, url: str, token_file: Path, web: Process):
        self.url, self.token_file, self.web = url, token_file, web

    @classmethod
    def serving(cls, processes, tmp_path: Path) -> SmartFetch:
        user = get_user_model().objects.create_user("smart-fetch")
        token_file = tmp_path / "token"
        token_file.write_text(token_for(user))
        node, port = f"test-{uuid.uuid4().hex[:8]}", free_port()
        environment = node_environment(node)
        processes.append(celery_worker(env=environment, queues=[work_notification_queue(node)], concurrency=2))
        web = Process(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "heavylift.wsgi",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                "1",
                "--threads",
                "4",
            ],
            env=environment,
            name="web",
        )
        processes.append(web)
        web.wait_for_output("Booting worker", timeout=60)
        return cls(f"http://127.0.0.1:{port}/fhir", token_file, web)

    def bulk(self, output: Path, *arguments: str, query: str = "") -> dict[str, list[dict]]:
        """Run `smart-fetch bulk`; what it downloaded, by type. `query` goes on its `--fhir-url`."""
        fetched = subprocess.run(
            [
                SMART_FETCH,
                "bulk",
                "--fhir-url",
                f"{self.url}?{query}" if query else self.url,
                "--bearer-token",
                str(self.token_file),
                *arguments,
                str(output),
            ],
            capture_output=True,
            text=True,
            timeout=180,
            env={**os.environ, "COLUMNS": "200"},
        )
        assert fetched.returncode == 0, fetched.stdout[-3000:] + fetched.stderr[-3000:] + self.web.output()[-3000:]
        return read_downloads(output)


def test_a_worker_killed_mid_export_costs_a_retry_that_beat_arranges_and_the_manifest_lists_every_resource_once(
    processes, settings, export_storage
):
    with BulkLoader() as loader:
        for resource in generate_resources(patients=15, seed=7):
            loader.add(resource, "generated", None)
    node = f"test-{uuid.uuid4().hex[:8]}"
    settings.NODE_ID = node
    settings.BULK_EXPORT_CHUNK_SIZE = 25
    settings.BULK_EXPORT_MAX_CONCURRENT_CHUNKS = 2  # a chunk for each worker: the doomed one can be caught holding one
    environment = node_environment(node)
    queue = work_notification_queue(node)
    # Production's safety net, not the test, notices the dead worker: beat runs batch.maintenance every second.
    scheduling = {
        **environment,
        "JOB_SCHEDULING": "true",
        "SCHEDULER_QUEUE": f"scheduled-{node}",
        "SCHEDULER_THREAD_COUNT": "1",
        "BATCH_MAINTENANCE_INTERVAL_SECONDS": "1",
        "BATCH_REANNOUNCE_AFTER_SECONDS": "2",
    }
    started = [
        celery_worker(
            env={**environment, "BATCH_LEASE_SECONDS": "3"}, queues=[queue], concurrency=1, name="doomed", wait=False
        ),
        celery_worker(env=environment, queues=[queue], concurrency=1, name="survivor", wait=False),
        scheduler_worker(scheduling),
    ]
    beat = celery_beat(scheduling)
    processes.extend([*started, beat])
    start_all(started, wait_until_ready)
    wait_until_beating(beat)
    doomed = started[0]
    owner = get_user_model().objects.create_user("exporter")
    request = parse_export_request(Level.SYSTEM, [])
    # The export row is locked FOR UPDATE before any worker runs (they are frozen meanwhile): a write step then
    # waits for it while it holds its chunk, so the kill lands mid-step however fast the machine is.
    for worker in started[:2]:
        worker.signal_group(signal.SIGSTOP)
    export = kick_off(
        owner, request, base_url="http://testserver/fhir", request_url="http://testserver/fhir/$export"
    ).export
    with transaction.atomic():
        BulkExport.objects.select_for_update().get(id=export.id)
        for worker in started[:2]:
            worker.signal_group(signal.SIGCONT)
        killed = kill_while_it_holds(
            doomed,
            WorkChunk.objects.filter(
                instance_id=export.job_instance_id,
                status=ChunkStatus.IN_PROGRESS,
                target_step_id__in=["expand-resources", "write-to-binaries"],
                worker__startswith=doomed.name + "-",
            ),
            timeout=180,
        )
    instance = wait_until(
        lambda: (
            (job := JobInstance.objects.get(id=export.job_instance_id)).status
            in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)
            and job
        ),
        timeout=180,
        message=lambda: JobInstance.objects.get(id=export.job_instance_id),
    )

    assert instance.status == JobStatus.COMPLETED, instance.error_message
    killed.refresh_from_db()
    assert (killed.status, killed.attempts, killed.error_count) == (ChunkStatus.COMPLETED, 2, 1)
    assert killed.error_message.startswith("Worker lost: doomed-")
    listed = exported_ids(instance.report)
    stored = Counter(Resource.objects.filter(deleted=False).values_list("resource_type", "logical_id"))
    assert listed == stored


FETCH_STEP = "fetch-resources"
SINK_FLUSH_SIZE = 500  # batch.sink writes a step's emitted chunks 500 at a time: the 501st starts the second flush
KILLS = 3  # BATCH_MAX_CHUNK_RETRIES is 3: a fourth lost worker would fail the chunk, and the export with it


class EmittedChunkHeld:
    """An uncommitted row with the id the fetch chunk's `index`-th emitted chunk will get, on a connection of its own.

    The engine names the n-th chunk a chunk emits `uuid5(chunk id, n)` (so that a rerun re-emits the same ids);
    a worker's `INSERT … ON CONFLICT DO NOTHING` of that id waits for this transaction. The worker is then stopped
    at a known point of its walk, whatever the machine's speed: the flushes before it are committed, the chunks
    since the last flush are in its memory, and it holds the fetch chunk until it is killed.
    """

    def __init__(self, fetch_chunk: WorkChunk, index: int):
        columns = [field.column for field in WorkChunk._meta.concrete_fields]
        values = ["%(id)s" if column == "id" else column for column in columns]
        self.connection = psycopg.connect(subprocess_database_url())
        self.connection.execute(
            f"INSERT INTO {WorkChunk._meta.db_table} ({', '.join(columns)}) SELECT {', '.join(values)} "
            f"FROM {WorkChunk._meta.db_table} WHERE id = %(fetch)s",
            {"id": uuid.uuid5(fetch_chunk.id, str(index)), "fetch": fetch_chunk.id},
        )
        self.backend = self.connection.info.backend_pid

    def waiting_sessions(self) -> list[int]:
        """The database sessions (backend pids) waiting for this transaction: the worker's flush of the held id."""
        with connection.cursor() as cursor:
            cursor.execute("SELECT pid FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))", [self.backend])
            return [pid for (pid,) in cursor.fetchall()]

    def release(self) -> None:
        self.connection.rollback()
        self.connection.close()


def sessions_alive(pids: list[int]) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", [pids])
        return cursor.fetchone()[0] > 0


PER_TYPE_WALK = ("Encounter", "Patient", "Procedure")


@pytest.mark.parametrize(
    ("types", "chunk_size", "held_at", "persisted_when_killed", "row_ranges"),
    [
        # Every type: 5,145 rows in ranges of 25 row ids, 8 ranges per fetch chunk: 26 fetch chunks, all emitted
        # and in the worker's memory when its one flush (at its completion) is stopped.
        pytest.param((), 25, (5, 15, 25), (0, 0, 0), True, id="whole-store-row-ranges"),
        # Encounter, Patient and Procedure (1,056 resources, a fifth of the store), one per page by (type, last id)
        # keysets: 1,056 fetch chunks. The first two workers each get one flush further than the one before: each
        # re-emits what was committed (the engine must take it as the same pages) and is stopped in the flush after;
        # the third is stopped in the last, at its completion.
        # Its 1,056 pages are 2,112 chunks after the fetch: ~160 s on a quiet machine, past pytest.ini's 300 s on a
        # loaded one (its own waits allow 600 s); the longest test, so a parallel run starts it first (conftest.py).
        pytest.param(
            PER_TYPE_WALK,
            1,
            (750, 1025, 1050),
            (500, 1000, 1000),
            False,
            id="per-type-keysets",
            marks=pytest.mark.timeout(900),
        ),
    ],
)
def test_a_fetch_killed_three_times_mid_walk_still_exports_every_resource_exactly_once(
    processes, settings, export_storage, types, chunk_size, held_at, persisted_when_killed, row_ranges
):
    """Issue 13: kill the worker during the fetch step of a 200k export, several times; every resource once.

    50 generated patients (5,145 resources) stand for the 200k: what a lost fetch risks (committed chunks
    re-emitted, pages shifted on the rerun, a flush cut in half) depends on how many pages the walk has and
    where it is cut, not on how many resources a page holds. At a chunk size of 1 the per-type walk has 1,056
    pages, more than a 200k store has at the default 10,000 (20) or at HAPI's 1,000 (200), and it crosses the
    engine's 500-chunk flush twice: it is killed with 500, 1,000 and 1,000 chunks committed and more in
    memory, so a rerun re-emits what was committed (the engine must take it as the same pages) and goes past
    it. The whole-store walk emits 8 row ranges per chunk (26 chunks of 25-row ranges here) and is killed
    in its only flush (crossing a flush would take 4,000 write chunks). Resources written between the kills
    (after transactionTime) must not shift a rerun's pages. Each worker is stopped at a chosen emitted chunk
    (`EmittedChunkHeld`), frozen and killed; beat's maintenance sees its lease lapse, and the retry goes to the
    next worker started on the node's queue.
    """
    with BulkLoader() as loader:
        for resource in generate_resources(patients=50, seed=13):
            loader.add(resource, "generated", None)
    node = f"test-{uuid.uuid4().hex[:8]}"
    settings.NODE_ID = node
    settings.BULK_EXPORT_CHUNK_SIZE = chunk_size
    settings.BULK_EXPORT_PAGES_PER_CHUNK = 8  # many fetch chunks to be killed among (version 3's packing)
    environment = node_environment(node, BATCH_RETRY_BACKOFF_SECONDS="1")
    queue = work_notification_queue(node)
    scheduling = {
        **environment,
        "JOB_SCHEDULING": "true",
        "SCHEDULER_QUEUE": f"scheduled-{node}",
        "SCHEDULER_THREAD_COUNT": "1",
        "BATCH_MAINTENANCE_INTERVAL_SECONDS": "1",
        "BATCH_REANNOUNCE_AFTER_SECONDS": "2",
    }
    scheduler, beat = scheduler_worker(scheduling), celery_beat(scheduling)
    processes.extend([scheduler, beat])
    wait_until_ready(scheduler)
    wait_until_beating(beat)
    owner = get_user_model().objects.create_user("exporter")
    request = parse_export_request(Level.SYSTEM, [("_type", resource_type) for resource_type in types])
    exported_types = types or tuple(sorted(set(Resource.objects.values_list("resource_type", flat=True))))
    expected = Counter(
        Resource.objects.filter(deleted=False, resource_type__in=exported_types).values_list(
            "resource_type", "logical_id"
        )
    )
    export = kick_off(
        owner, request, base_url="http://testserver/fhir", request_url="http://testserver/fhir/$export"
    ).export
    instance = JobInstance.objects.get(id=export.job_instance_id)
    assert instance.parameters["row_ranges"] is row_ranges
    fetch = WorkChunk.objects.get(instance=instance, target_step_id=FETCH_STEP)
    emitted = WorkChunk.objects.filter(instance=instance, target_step_id="expand-resources")

    for kill, (index, persisted) in enumerate(zip(held_at, persisted_when_killed, strict=True), start=1):
        held = EmittedChunkHeld(fetch, index)
        try:
            doomed = celery_worker(
                env={**environment, "BATCH_LEASE_SECONDS": "3"}, queues=[queue], concurrency=1, name=f"doomed{kill}"
            )
            processes.append(doomed)
            stopped = wait_until(
                held.waiting_sessions,
                timeout=180,
                message=lambda: f"fetch never reached chunk {index}:\n{doomed.tail()}",
            )
            kill_while_it_holds(
                doomed,
                WorkChunk.objects.filter(
                    id=fetch.id, status=ChunkStatus.IN_PROGRESS, worker__startswith=f"doomed{kill}-"
                ),
                timeout=60,
            )
            assert emitted.count() == persisted
        finally:
            held.release()
        # Released, the dead worker's session runs its insert, finds its client gone and rolls back; until then
        # it could take the next held id itself and be mistaken for the next worker.
        wait_until(lambda: not sessions_alive(stopped), timeout=60, message="the killed worker's session lives on")
        store(patient(f"written-after-kill-{kill}"))  # after transactionTime: in no page of any rerun

    processes.append(celery_worker(env=environment, queues=[queue], concurrency=2, name="survivor"))
    instance = wait_until(
        lambda: (
            (job := JobInstance.objects.get(id=export.job_instance_id)).status
            in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)
            and job
        ),
        timeout=600,
        message=lambda: JobInstance.objects.get(id=export.job_instance_id),
    )

    assert instance.status == JobStatus.COMPLETED, instance.error_message
    fetch.refresh_from_db()
    assert (fetch.status, fetch.attempts, fetch.error_count) == (ChunkStatus.COMPLETED, KILLS + 1, KILLS)
    assert fetch.error_message.startswith(f"Worker lost: doomed{KILLS}-")
    assert sorted(emitted.values_list("sequence", flat=True)) == list(range(emitted.count()))
    listed = exported_ids(instance.report)
    assert max(listed.values()) == 1
    assert listed == expected
