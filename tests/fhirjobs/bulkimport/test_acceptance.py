"""The import through real processes: one Heavylift's `$export` pulled into a second one with its own empty
database, by `$import` of the file URLs and by `$bulk-submit` of the manifest URL, then by `$bulk-submit` with
a replaced manifest and a stopped submission; and a worker killed in the middle of an import, and of an undo.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections import Counter

import httpx
import psycopg
import pytest
from django.contrib.auth import get_user_model
from django.db import connection

from batch import control
from batch.queues import work_notification_queue
from batch.statuses import ChunkStatus, JobStatus
from fhirjobs.bulkimport.inline import load_paths
from fhirjobs.bulkimport.loader import SourceLine, load_lines
from fhirjobs.bulkimport.models import BulkImport, BulkSubmission, ImportWrite
from fhirjobs.bulkimport.parameters import ImportRequest
from fhirjobs.bulkimport.services import kick_off
from fhirjobs.bulkimport.undo import BULK_SUBMIT_UNDO_JOB
from fhirstore.authority import SERVER
from fhirstore.models import Resource
from fhirstore.storage import reindex_resources
from fhirstore.synthetic import generate_resources
from jobsite.tokens import token_for
from tests.fhirjobs.reindex.helpers import INDEX_TABLES, index_snapshot
from tests.fhirstore.helpers import SYNTHEA_NDJSON
from tests.processes import (
    PROJECT_DIR,
    celery_worker,
    chunks_held_by,
    free_port,
    gunicorn,
    kill_while_it_holds,
    locked_by_another_transaction,
    node_workers,
    subprocess_database_url,
    wait_for_the_end,
    wait_until,
    wait_until_serving,
)

pytestmark = [pytest.mark.acceptance, pytest.mark.django_db(transaction=True)]


def without_version_meta(body: dict) -> dict:
    meta = {key: value for key, value in body.get("meta", {}).items() if key not in ("versionId", "lastUpdated")}
    return {**{key: value for key, value in body.items() if key != "meta"}, **({"meta": meta} if meta else {})}


class Node:
    """A web process and a worker on one database: one Heavylift."""

    def __init__(self, processes: list, database_url: str, **env: str):
        self.name = f"test-{uuid.uuid4().hex[:8]}"
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}/fhir"
        self.env = {"NODE_ID": self.name, "JOB_SCHEDULING": "false", "DATABASE_URL": database_url, **env}
        processes.append(
            celery_worker(
                env=self.env, queues=[work_notification_queue(self.name)], concurrency=1, name=f"worker-{self.name}"
            )
        )
        self.web = gunicorn(self.port, self.env, "--workers", "1", "--threads", "4", name=f"web-{self.name}")
        processes.append(self.web)
        wait_until_serving(self.web)

    def manage(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=PROJECT_DIR,
            capture_output=True,
            text=True,
            env={**_environ(), **self.env},
            timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def wait(
        self, client: httpx.Client, status_url: str, method: str = "GET", body: dict | None = None, timeout: float = 240
    ) -> httpx.Response:
        def answered() -> httpx.Response | None:
            response = client.request(method, status_url, json=body, headers={"Prefer": "respond-async"})
            return response if response.status_code != 202 else None

        return wait_until(answered, timeout, message=f"{status_url} still in progress")


def _environ() -> dict[str, str]:
    import os

    return dict(os.environ)


@pytest.fixture
def second_database():
    """An empty, migrated database of its own (the second Heavylift's), dropped at the end."""
    name = f"{connection.settings_dict['NAME']}_second"
    url = subprocess_database_url().rsplit("/", 1)[0] + f"/{name}"
    admin = subprocess_database_url()
    with psycopg.connect(admin, autocommit=True) as db:
        db.execute(f'DROP DATABASE IF EXISTS "{name}"')
        db.execute(f'CREATE DATABASE "{name}"')
    done = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        env={**_environ(), "DATABASE_URL": url},
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    yield url
    with psycopg.connect(admin, autocommit=True) as db:
        db.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_an_export_of_one_heavylift_imports_into_another_by_import_and_by_bulk_submit(
    processes, tmp_path, second_database
):
    report = load_paths([SYNTHEA_NDJSON])
    assert not report.bad
    exporter = get_user_model().objects.create_user("exporter")
    source_token = token_for(exporter)
    source = Node(processes, subprocess_database_url())
    target = Node(
        processes, second_database, BULK_IMPORT_ALLOWED_SOURCES=f"{source.base}/", BULK_IMPORT_CHUNK_SIZE="100"
    )
    target_token = (
        target.manage(
            "shell",
            "-c",
            (
                "from django.contrib.auth import get_user_model; from jobsite.tokens import token_for;"
                "u = get_user_model().objects.create_user('importer', is_staff=True);"
                "print(token_for(u))"
            ),
        )
        .strip()
        .splitlines()[-1]
    )  # after shell's auto-import notice
    from_source = httpx.Client(headers={"Authorization": f"Bearer {source_token}"}, timeout=30)
    to_target = httpx.Client(headers={"Authorization": f"Bearer {target_token}"}, timeout=30)

    kicked = from_source.get(f"{source.base}/$export", headers={"Prefer": "respond-async"})
    assert kicked.status_code == 202, kicked.text
    manifest_url = kicked.headers["Content-Location"]
    manifest = source.wait(from_source, manifest_url).json()
    inputs = [
        {
            "name": "input",
            "part": [{"name": "type", "valueCode": item["type"]}, {"name": "url", "valueUri": item["url"]}],
        }
        for item in manifest["output"]
    ]
    imported = to_target.post(
        f"{target.base}/$import",
        headers={"Prefer": "respond-async"},
        json={
            "resourceType": "Parameters",
            "parameter": [
                {"name": "inputFormat", "valueCode": "application/fhir+ndjson"},
                {
                    "name": "storageDetail",
                    "part": [
                        {"name": "type", "valueCode": "https"},
                        {"name": "credentialBearerToken", "valueString": source_token},
                    ],
                },
                *inputs,
            ],
        },
    )
    assert imported.status_code == 202, imported.text
    outcome = target.wait(to_target, imported.headers["Content-Location"])

    assert outcome.status_code == 200, outcome.text
    expected = Counter(Resource.objects.values_list("resource_type", flat=True))
    assert outcome.json()["issue"][0]["diagnostics"] == (
        f"Import completed: {sum(expected.values())} loaded, 0 unchanged, 0 failed, 0 warnings"
    )
    source_bodies = {
        (t, i): without_version_meta(b)
        for t, i, b in Resource.objects.values_list("resource_type", "logical_id", "body")
    }
    with psycopg.connect(second_database) as db:
        rows = db.execute("SELECT resource_type, logical_id, body, version_id FROM fhirstore_resource").fetchall()
    assert {(t, i): without_version_meta(b) for t, i, b, _ in rows} == source_bodies
    assert Counter(t for t, _, _, _ in rows) == expected

    submission = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "submitter", "valueIdentifier": {"system": "https://example.org/providers", "value": "source"}},
            {"name": "submissionId", "valueString": "round-trip-1"},
        ],
    }
    added = to_target.post(
        f"{target.base}/$bulk-submit",
        json={
            **submission,
            "parameter": [
                *submission["parameter"],
                {"name": "manifestUrl", "valueUrl": manifest_url},
                {
                    "name": "fileRequestHeader",
                    "part": [
                        {"name": "headerName", "valueString": "Authorization"},
                        {"name": "headerValue", "valueString": f"Bearer {source_token}"},
                    ],
                },
                {"name": "submissionStatus", "valueCoding": {"code": "completed"}},
            ],
        },
    )
    assert added.status_code == 200, added.text
    polled = to_target.post(f"{target.base}/$bulk-submit-status", json=submission, headers={"Prefer": "respond-async"})
    assert polled.status_code == 202, polled.text
    status = target.wait(to_target, polled.headers["Content-Location"])

    assert status.status_code == 200, status.text
    counts = {item["type"]: item["count"] for item in status.json()["output"]}
    assert counts == dict(expected) and status.json()["error"] == []
    with psycopg.connect(second_database) as db:
        assert db.execute("SELECT max(version_id), count(*) FROM fhirstore_resource").fetchone() == (
            1,
            sum(expected.values()),
        )  # the same content again: no new version, no duplicate


@pytest.mark.parametrize("in_database", ["false", "true"], ids=["python", "sql"])
def test_a_worker_killed_mid_import_costs_a_retry_and_nothing_is_missing_or_duplicated(
    processes, node, settings, file_root, in_database
):
    inputs = file_root
    files: dict[str, list[str]] = {}
    for resource in generate_resources(patients=15, seed=11):
        files.setdefault(resource["resourceType"], []).append(json.dumps(resource))
    for resource_type, lines in files.items():
        (inputs / f"{resource_type}.ndjson").write_text("\n".join(lines) + "\n")
    settings.BULK_IMPORT_MAX_CONCURRENT_CHUNKS = 2  # a chunk for each worker: the doomed one can be caught holding one
    doomed, _ = node_workers(
        processes, node, "doomed", "survivor", BULK_IMPORT_FILE_ROOT=str(inputs), FHIR_INDEX_IN_DATABASE=in_database
    )
    request = ImportRequest(
        inputs=tuple({"type": name, "url": (inputs / f"{name}.ndjson").as_uri()} for name in files), chunk_size=50
    )

    # A load-resources chunk's writes need ROW EXCLUSIVE: with the table held in SHARE mode, it waits holding its chunk.
    with locked_by_another_transaction("LOCK TABLE fhirstore_resource IN SHARE MODE"):
        bulk_import = kick_off(None, request, authority=SERVER, base_url="http://testserver/fhir")
        killed = kill_while_it_holds(
            doomed, chunks_held_by(doomed, bulk_import.job_instance_id, "load-resources"), timeout=90
        )
    instance = wait_for_the_end(bulk_import.job_instance_id, 120)

    assert instance.status == JobStatus.COMPLETED, instance.error_message
    killed.refresh_from_db()
    assert (killed.status, killed.attempts) == (ChunkStatus.COMPLETED, 2), "the killed chunk was run again"
    stored = Counter(Resource.objects.values_list("resource_type", flat=True))
    assert stored == {resource_type: len(lines) for resource_type, lines in files.items()}
    assert set(Resource.objects.values_list("version_id", flat=True)) == {1}
    assert instance.report["totals"]["failed"] == 0
    imported = index_snapshot()
    assert sum(model.objects.count() for model in INDEX_TABLES) == sum(map(len, imported.values())), "no row twice"
    for model in INDEX_TABLES:
        model.objects.all().delete()
    for resource_type in files:
        ids = list(Resource.objects.filter(resource_type=resource_type).values_list("logical_id", flat=True))
        reindex_resources(resource_type, ids)  # the Python extraction, the oracle
    assert index_snapshot() == imported


def test_a_bulk_submit_round_trip_with_a_replaced_manifest_and_then_a_stopped_submission(processes, second_database):
    """Heavylift B pulls A's export by `$bulk-submit`; a corrected manifest (Patients only) replaces it, and
    what only the first brought is removed — an Organization B held before gets its own version back. A second
    submission of the full export is stopped: what it loaded is removed again, the Organization restored again."""
    report = load_paths([SYNTHEA_NDJSON])
    assert not report.bad
    source_token = token_for(get_user_model().objects.create_user("exporter"))
    source = Node(processes, subprocess_database_url())
    target = Node(
        processes, second_database, BULK_IMPORT_ALLOWED_SOURCES=f"{source.base}/", BULK_IMPORT_CHUNK_SIZE="100"
    )
    organization = Resource.objects.filter(resource_type="Organization").values_list("body", flat=True).first()
    held_before = {**without_version_meta(organization), "name": "held by the target before"}
    target_token = (
        target.manage(
            "shell",
            "-c",
            (
                "from django.contrib.auth import get_user_model; from django.db import transaction;"
                "from jobsite.tokens import token_for; from fhirstore.storage import Write, save_resources;"
                "from fhirstore.authority import SERVER;"
                f"body = {json.dumps(held_before)!r};"
                "import json; transaction.atomic()(lambda: save_resources([Write(json.loads(body))], "
                "authority=SERVER))();"
                "u = get_user_model().objects.create_user('importer', is_staff=True);"
                "print(token_for(u))"
            ),
        )
        .strip()
        .splitlines()[-1]
    )
    from_source = httpx.Client(headers={"Authorization": f"Bearer {source_token}"}, timeout=30)
    to_target = httpx.Client(headers={"Authorization": f"Bearer {target_token}"}, timeout=30)

    def export(query: str = "") -> str:
        kicked = from_source.get(f"{source.base}/$export{query}", headers={"Prefer": "respond-async"})
        assert kicked.status_code == 202, kicked.text
        source.wait(from_source, kicked.headers["Content-Location"])
        return kicked.headers["Content-Location"]

    everything, patients_only = export(), export("?_type=Patient")
    key = [
        {"name": "submitter", "valueIdentifier": {"system": "https://example.org/providers", "value": "source"}},
    ]
    header = {
        "name": "fileRequestHeader",
        "part": [
            {"name": "headerName", "valueString": "Authorization"},
            {"name": "headerValue", "valueString": f"Bearer {source_token}"},
        ],
    }

    def submit(submission_id: str, *more: dict) -> None:
        body = {
            "resourceType": "Parameters",
            "parameter": [*key, {"name": "submissionId", "valueString": submission_id}],
        }
        answer = to_target.post(f"{target.base}/$bulk-submit", json={**body, "parameter": [*body["parameter"], *more]})
        assert answer.status_code == 200, answer.text

    def imported(submission_id: str, manifests: int) -> None:
        body = {
            "resourceType": "Parameters",
            "parameter": [*key, {"name": "submissionId", "valueString": submission_id}],
        }
        wait_until(
            lambda: (
                to_target.post(f"{target.base}/$bulk-submit-status", json=body)
                .headers.get("X-Progress", "")
                .startswith(f"{manifests} of {manifests} manifests imported")
            ),
            240,
            message=f"{submission_id}'s imports did not end",
        )

    def status_manifest(submission_id: str) -> dict:
        body = {
            "resourceType": "Parameters",
            "parameter": [*key, {"name": "submissionId", "valueString": submission_id}],
        }
        polled = to_target.post(f"{target.base}/$bulk-submit-status", json=body, headers={"Prefer": "respond-async"})
        answer = target.wait(to_target, polled.headers["Content-Location"])
        assert answer.status_code == 200, answer.text
        return answer.json()

    def stored() -> dict[tuple[str, str], dict]:
        with psycopg.connect(second_database) as db:
            rows = db.execute("SELECT resource_type, logical_id, body FROM fhirstore_resource WHERE NOT deleted")
            return {(t, i): without_version_meta(b) for t, i, b in rows.fetchall()}

    source_bodies = {
        (t, i): without_version_meta(b)
        for t, i, b in Resource.objects.values_list("resource_type", "logical_id", "body")
    }
    patients = {k: v for k, v in source_bodies.items() if k[0] == "Patient"}
    others = len(source_bodies) - len(patients) - 1  # created by each full import; the Organization was held
    held = ("Organization", organization["id"])

    submit("replaced", {"name": "manifestUrl", "valueUrl": everything}, header)
    imported("replaced", 1)
    assert stored() == source_bodies
    submit(
        "replaced",
        {"name": "manifestUrl", "valueUrl": patients_only},
        {"name": "replacesManifestUrl", "valueUrl": everything},
        {"name": "submissionStatus", "valueCoding": {"code": "completed"}},
        header,
    )
    replaced = status_manifest("replaced")

    assert stored() == {**patients, held: held_before}
    assert {item["manifestUrl"] for item in replaced["output"]} == {patients_only}
    assert sum(item["count"] for item in replaced["output"]) == len(patients)
    assert [entry["diagnostics"] for entry in replaced["error"]] == [
        f"What {everything} alone brought was undone: {others} resources removed, 1 restored to their earlier "
        "version, 0 kept because written since"
    ]

    submit("stopped", {"name": "manifestUrl", "valueUrl": everything}, header)
    imported("stopped", 1)
    assert stored() == source_bodies
    submit("stopped", {"name": "submissionStatus", "valueCoding": {"code": "stopped"}})
    stopped = status_manifest("stopped")

    assert stored() == {**patients, held: held_before}  # the Patients were unchanged by it: not its to remove
    assert f"What the stopped submission loaded was undone: {others} resources removed, 1 restored" in " ".join(
        entry.get("diagnostics", "") for entry in stopped["error"]
    )
    with psycopg.connect(second_database) as db:
        assert db.execute(
            "SELECT version_id, body->>'name' FROM fhirstore_resource WHERE resource_type = 'Organization'"
            " AND logical_id = %s",
            [organization["id"]],
        ).fetchone() == (5, "held by the target before")  # held, imported, restored, imported, restored


def test_a_worker_killed_mid_undo_costs_a_retry_and_the_undo_is_exact(processes, node, django_user_model):
    submitter = django_user_model.objects.create_user("provider")
    submission = BulkSubmission.objects.create(owner=submitter, submitter="s|a", submission_id="s1", status="stopped")
    bulk_import = BulkImport.objects.create(owner=submitter, submission=submission, request_url="test")
    lines = [json.dumps(resource).encode() for resource in generate_resources(patients=10, seed=12)]
    load_lines(
        [SourceLine("test", number, line) for number, line in enumerate(lines, 1)],
        import_id=bulk_import.id,
        authority=SERVER,
        record_writes=True,
    )
    written = Resource.objects.count()
    doomed, _ = node_workers(processes, node, "doomed", "survivor")

    # An undo chunk's UPDATE of the resource rows needs ROW EXCLUSIVE: with the table held in SHARE mode, it
    # waits inside its transaction, holding its chunk.
    with locked_by_another_transaction("LOCK TABLE fhirstore_resource IN SHARE MODE"):
        undo_job = control.start_job(
            BULK_SUBMIT_UNDO_JOB,
            {"submission_id": str(submission.id), "import_ids": [str(bulk_import.id)], "batch_size": 50},
        )
        killed = kill_while_it_holds(doomed, chunks_held_by(doomed, undo_job.id, "undo"), timeout=90)
    instance = wait_for_the_end(undo_job.id, 120)

    assert instance.status == JobStatus.COMPLETED, instance.error_message
    killed.refresh_from_db()
    assert (killed.status, killed.attempts) == (ChunkStatus.COMPLETED, 2), "the killed chunk was run again"
    assert (instance.report["removed"], instance.report["restored"], instance.report["kept"]) == (written, 0, 0)
    assert set(Resource.objects.values_list("deleted", "version_id")) == {(True, 2)}
    assert not ImportWrite.objects.exists()
