"""A cluster that works as one, on simulated hosts (tests/cluster/hosts.py), with the default settings.

Four application hosts: `front` runs only the web process (its own NODE_ID, no batch worker: the web-only
host of the README), `w1`-`w3` run web and worker as one logical node `main` (one NODE_ID, one queue),
`w1` also beat and the scheduler worker. PostgreSQL and Redis run on `db`. One cluster serves every
scenario of this module: building it (about half a minute) dominates its cost.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit
from uuid import UUID

import httpx
import pytest

from tests.cluster.hosts import Cluster, Host, needs_root, wait_until_ready
from tests.processes import wait_until

pytestmark = [needs_root, pytest.mark.acceptance]

WORKER_HOSTS = ("w1", "w2", "w3")
NODE = "main"
IMPORT_SOURCE_PORT = 8080
JOB_TIMEOUT = 180  # seconds: generous for a loaded 2-core machine; the jobs take a few seconds
LEASE_SECONDS = 8
SETTLE_SECONDS = 1  # for statements a frozen host had already sent to reach the database and commit


@pytest.fixture(scope="module")
def cluster(empty_cluster: Cluster) -> Iterator[Cluster]:
    front = empty_cluster.add_host("front", NODE_ID="front")
    # Identical on every host (processes read the shared settings when they start), as docs/cluster.md asks:
    # the allow-list names the front host's file server; leases and lost-message recovery shorter than their
    # 30 s defaults, so a lost machine costs seconds here.
    empty_cluster.settings.update(
        {
            "BULK_IMPORT_ALLOWED_SOURCES": f"http://{front.address}:{IMPORT_SOURCE_PORT}/",
            "BATCH_LEASE_SECONDS": str(LEASE_SECONDS),
            "BATCH_REANNOUNCE_AFTER_SECONDS": str(LEASE_SECONDS),
        }
    )
    workers = [empty_cluster.add_host(name, NODE_ID=NODE) for name in WORKER_HOSTS]
    started = [front.start("web")]
    for host in workers:
        started += [host.start("worker"), host.start("web")]
    started += [workers[0].start("beat"), workers[0].start("scheduler")]
    wait_until_ready(started)
    yield empty_cluster


def client(cluster: Cluster) -> httpx.Client:
    return httpx.Client(headers={"Authorization": f"Bearer {cluster.api_token()}"}, timeout=30)


def web_hosts(cluster: Cluster) -> list[Host]:
    return [cluster.hosts[name] for name in ("front", *WORKER_HOSTS)]


def on_host(url: str, host: Host) -> str:
    """The same URL, asked of another web host."""
    return urlunsplit(urlsplit(url)._replace(netloc=f"{host.address}:{urlsplit(url).port}"))


def wait_for_job(cluster: Cluster, job_id: str) -> str:
    return wait_until(
        lambda: (
            (status := cluster.sql("SELECT status FROM batch_jobinstance WHERE id = %s", [job_id])[0][0])
            in ("COMPLETED", "FAILED", "CANCELLED")
            and status
        ),
        JOB_TIMEOUT,
        message=f"job {job_id} did not end",
    )


def wait_for_async(http: httpx.Client, status_url: str) -> httpx.Response:
    """Poll a Bulk Data status URL until it stops answering 202."""
    return wait_until(
        lambda: (answer := http.get(status_url)).status_code != 202 and answer,
        JOB_TIMEOUT,
        message=f"{status_url} still in progress",
    )


def hosts_that_ran(cluster: Cluster, job_id: str) -> set[str]:
    """The hosts whose workers ran the job's chunks: a chunk's `worker` is `<Celery hostname>/<pid>`, and the
    Procfile names a worker `worker-<host>-<index>`."""
    workers = {
        worker
        for (worker,) in cluster.sql(
            "SELECT DISTINCT worker FROM batch_workchunk WHERE instance_id = %s AND worker <> ''", [job_id]
        )
    }
    return {host for host in cluster.hosts if any(f"@worker-{host}-" in worker for worker in workers)}


def test_one_job_runs_on_every_worker_host_of_its_node(cluster):
    with client(cluster) as http:
        started = http.post(
            cluster.hosts["w1"].url("/control/jobs"),
            json={"jobDefinitionId": "DIAGNOSTIC_NOOP", "parameters": {"chunks": 120, "sleep_ms": 50}},
        )
    assert started.status_code == 201, started.text
    job_id = started.json()["instanceId"]

    assert wait_for_job(cluster, job_id) == "COMPLETED"
    assert hosts_that_ran(cluster, job_id) == set(WORKER_HOSTS)
    assert cluster.sql(
        "SELECT count(*), count(*) FILTER (WHERE status = 'COMPLETED') FROM batch_workchunk "
        "WHERE instance_id = %s AND target_step_id = 'sleep'",
        [job_id],
    ) == [(120, 120)]


def test_a_job_started_on_a_web_only_host_starts_on_the_node_that_has_workers(cluster):
    with client(cluster) as http:
        started = http.post(
            cluster.hosts["front"].url("/control/jobs"),
            json={"jobDefinitionId": "DIAGNOSTIC_NOOP", "parameters": {"chunks": 6}},
        )
    assert started.status_code == 201, started.text
    job = started.json()

    assert job["nodeId"] == NODE  # at kick-off, not after BATCH_NODE_TIMEOUT_SECONDS
    assert wait_for_job(cluster, job["instanceId"]) == "COMPLETED"
    assert cluster.sql("SELECT count(*) FROM batch_jobreassignment WHERE instance_id = %s", [job["instanceId"]]) == [
        (0,)
    ]  # no "moved from node front" warning


def test_an_export_started_on_a_web_only_host_is_served_by_every_web_host(cluster):
    cluster.hosts["w2"].run(["python", "manage.py", "generate_fhir", "--patients", "4", "--seed", "3", "--no-progress"])
    front = cluster.hosts["front"]
    with client(cluster) as http:
        kicked = http.get(
            front.url("/fhir/$export"), headers={"Prefer": "respond-async", "Accept": "application/fhir+json"}
        )
        assert kicked.status_code == 202, kicked.text
        status_url = kicked.headers["Content-Location"]
        manifest = wait_for_async(http, status_url)
        assert manifest.status_code == 200, manifest.text
        files = [item["url"] for item in manifest.json()["output"]]
        assert files

        answers = {(host.name, url): http.get(on_host(url, host)) for url in files for host in web_hosts(cluster)}
        assert {key: answer.status_code for key, answer in answers.items()} == dict.fromkeys(answers, 200)
        assert len({answer.content for (host, url), answer in answers.items() if url == files[0]}) == 1

        deleted = http.delete(status_url)
        assert deleted.status_code == 202, deleted.text
        assert {http.get(on_host(url, host)).status_code for url in files for host in web_hosts(cluster)} == {404}
    leftovers = [
        path for host in cluster.hosts.values() for path in (host.disk / "bulkexport").rglob("*") if path.is_file()
    ]
    assert leftovers == []  # no host keeps patient data past the export's deletion


def test_an_import_started_on_one_host_is_fetched_by_the_workers_of_others(cluster):
    front = cluster.hosts["front"]
    source = cluster.data_path / "import-source"  # on front's disk: no other host has these files
    front.run(
        [
            "python",
            "manage.py",
            "generate_fhir",
            "--patients",
            "3",
            "--seed",
            "11",
            "--output",
            str(source),
            "--no-progress",
        ]
    )
    files = sorted(path.name for path in (front.disk / "import-source").iterdir())
    patient = json.loads(
        (front.disk / "import-source" / next(f for f in files if f.startswith("Patient."))).read_text().splitlines()[0]
    )
    server = front.start_program(
        ["python", "-m", "http.server", str(IMPORT_SOURCE_PORT), "--bind", front.address, "--directory", str(source)],
        name="import-source",
    )
    base = f"http://{front.address}:{IMPORT_SOURCE_PORT}/"
    wait_until(lambda: _answers(base), 60, message=server.tail)
    inputs = [
        {
            "name": "input",
            "part": [{"name": "type", "valueCode": name.split(".")[0]}, {"name": "url", "valueUri": f"{base}{name}"}],
        }
        for name in files
    ]
    try:
        with client(cluster) as http:
            kicked = http.post(
                front.url("/fhir/$import"),
                headers={"Prefer": "respond-async"},
                json={
                    "resourceType": "Parameters",
                    "parameter": [{"name": "inputFormat", "valueCode": "application/fhir+ndjson"}, *inputs],
                },
            )
            assert kicked.status_code == 202, kicked.text
            outcome = wait_for_async(http, kicked.headers["Content-Location"])
            assert outcome.status_code == 200, outcome.text
            assert ", 0 failed," in outcome.json()["issue"][0]["diagnostics"]

            for host in web_hosts(cluster):
                read = http.get(host.url(f"/fhir/Patient/{patient['id']}"))
                assert read.status_code == 200, (host.name, read.text)
        job_id = cluster.sql(
            "SELECT id FROM batch_jobinstance WHERE definition_id = 'BULK_IMPORT' ORDER BY create_time DESC LIMIT 1"
        )[0][0]
        assert hosts_that_ran(cluster, job_id) <= set(WORKER_HOSTS)
        assert hosts_that_ran(cluster, job_id)
    finally:
        front.stop([server])


def test_a_machine_powered_off_mid_job_costs_only_its_chunks_and_the_job_ends_on_the_others(cluster):
    """A node of several machines survives one of them: the chunks it held are retried by the others once
    their leases lapse; the node stays live, so nothing is re-homed. Each chunk counts once."""
    w1, w3 = cluster.hosts["w1"], cluster.hosts["w3"]
    chunks = 150
    with client(cluster) as http:
        started = http.post(
            w1.url("/control/jobs"),
            json={"jobDefinitionId": "DIAGNOSTIC_NOOP", "parameters": {"chunks": chunks, "sleep_ms": 100}},
        )
    assert started.status_code == 201, started.text
    job_id = started.json()["instanceId"]
    held = wait_until(lambda: caught_holding(cluster, w3, job_id), JOB_TIMEOUT, message="w3 caught holding a chunk")
    try:
        w3.power_off()

        assert wait_for_job(cluster, job_id) == "COMPLETED"
        assert cluster.sql(
            "SELECT count(*) FROM batch_workchunk WHERE instance_id = %s AND target_step_id = 'sleep' "
            "AND status = 'COMPLETED'",
            [job_id],
        ) == [(chunks,)]
        reruns = cluster.sql("SELECT attempts, worker FROM batch_workchunk WHERE id = ANY(%s)", [list(held)])
        assert all(attempts > 1 and "@worker-w3-" not in worker for attempts, worker in reruns), (
            f"the chunks w3 held ran again on another machine: {reruns}"
        )
        assert cluster.sql("SELECT combined_records_processed FROM batch_jobinstance WHERE id = %s", [job_id]) == [
            (chunks,)
        ]  # every chunk counted once, the retried ones too
        assert cluster.sql("SELECT count(*) FROM batch_jobreassignment WHERE instance_id = %s", [job_id]) == [(0,)]
        assert {"w1", "w2"} <= hosts_that_ran(cluster, job_id)
    finally:
        w3.power_on()
        wait_until_ready([w3.start("worker"), w3.start("web")])


def caught_holding(cluster: Cluster, host: Host, job_id: str) -> set[UUID]:
    """The job's sleep chunks `host` holds, caught with the host frozen (`Host.freeze`) once what it sent
    before has landed: it then holds exactly these when powered off. Thawed if it holds none: between two
    chunks, or done with the ones a snapshot taken while it ran would have shown."""
    host.freeze()
    time.sleep(SETTLE_SECONDS)
    held = {
        chunk
        for (chunk,) in cluster.sql(
            "SELECT id FROM batch_workchunk WHERE instance_id = %s AND target_step_id = 'sleep' "
            "AND status = 'IN_PROGRESS' AND worker LIKE %s",
            [job_id, f"%@worker-{host.name}-%"],
        )
    }
    if not held:
        host.thaw()
    return held


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
