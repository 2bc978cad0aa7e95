"""The import through real processes: one Heavylift's `$export` pulled into a second one with its own empty
database, by `$import` of the file URLs and by `$bulk-submit` of the manifest URL; and a worker killed
in the middle of an import.
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

from batch.queues import work_notification_queue
from batch.statuses import ChunkStatus, JobStatus
from fhirjobs.bulkimport.inline import load_paths
from fhirjobs.bulkimport.parameters import ImportRequest
from fhirjobs.bulkimport.services import kick_off
from fhirstore.authority import SERVER
from fhirstore.models import Resource
from fhirstore.storage import reindex_resources
from fhirstore.synthetic import generate_resources
from jobsite.tokens import token_for
from tests.fhirjobs.reindex.helpers import INDEX_TABLES, index_snapshot
from tests.fhirstore.helpers import SYNTHEA_NDJSON
from tests.processes import (
    PROJECT_DIR,
    Process,
    celery_worker,
    chunks_held_by,
    free_port,
    kill_while_it_holds,
    locked_by_another_transaction,
    node_workers,
    subprocess_database_url,
    wait_for_the_end,
    wait_until,
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
        self.web = Process(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "heavylift.wsgi",
                "--bind",
                f"127.0.0.1:{self.port}",
                "--workers",
                "1",
                "--threads",
                "4",
            ],
            env=self.env,
            name=f"web-{self.name}",
        )
        processes.append(self.web)
        self.web.wait_for_output("Booting worker", timeout=60)

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
