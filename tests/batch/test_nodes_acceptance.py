"""Acceptance: jobs of a node whose workers all died, or that never had one, complete on a live node; a job
started on a node without workers (a web-only host) starts on a live node.

Real `celery worker` processes record their heartbeats; the test runs the maintenance passes beat would.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from batch.control import JobStatus, get_job, live_nodes, start_job
from batch.maintenance import run_maintenance_pass
from batch.models import WorkChunk
from batch.statuses import ChunkStatus
from tests.batch.helpers import unique_node
from tests.processes import (
    PROJECT_DIR,
    celery_worker,
    subprocess_database_url,
    wait_until,
)

pytestmark = [pytest.mark.acceptance, pytest.mark.django_db(transaction=True)]

NODE_TIMEOUT = 10
RECOVERY_CLAIM_SECONDS = 60  # README: a dead node's jobs complete elsewhere "within a minute"


def start_workers(processes: list, nodes: dict[str, str]) -> list:
    """One single-process worker per {name: node}, started at once (starting is what costs time)."""
    with ThreadPoolExecutor(len(nodes)) as starting:
        futures = [
            starting.submit(
                celery_worker,
                env={"NODE_ID": node, "BATCH_LEASE_SECONDS": "2", "BATCH_NODE_TIMEOUT_SECONDS": str(NODE_TIMEOUT)},
                concurrency=1,
                name=name,
            )
            for name, node in nodes.items()
        ]
    for future in futures:
        if future.exception() is None:
            processes.append(future.result())  # stopped by the fixture even if another failed to start
    return [future.result() for future in futures]


def start_job_from_the_shell(node: str, parameters: str) -> str:
    """`NODE_ID=<node> manage.py start_job …`, as on a web-only node; returns the job id."""
    started = subprocess.run(
        [sys.executable, "manage.py", "start_job", "DIAGNOSTIC_NOOP", "--params", parameters],
        cwd=PROJECT_DIR,
        # The cluster's node timeout, as every process of it has: with the default 60 s, the victim killed
        # seconds ago would still count as live there (and, with nothing left to run, as the least busy).
        env={
            **os.environ,
            "DATABASE_URL": subprocess_database_url(),
            "NODE_ID": node,
            "BATCH_NODE_TIMEOUT_SECONDS": str(NODE_TIMEOUT),
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return started.stdout.split()[-1]


def test_jobs_of_a_dead_node_and_of_a_node_without_workers_complete_on_a_live_node(processes, settings):
    settings.BATCH_NODE_TIMEOUT_SECONDS = NODE_TIMEOUT
    live, doomed = unique_node(), unique_node()
    live_worker, victim = start_workers(processes, {"live": live, "victim": doomed})
    orphan = start_job("DIAGNOSTIC_NOOP", {"chunks": 4, "sleep_ms": 50}, node_id=f"gone-{live}").id  # never a worker
    pinned = start_job("DIAGNOSTIC_NOOP", {"chunks": 20, "sleep_ms": 300}, node_id=doomed)
    chunks = WorkChunk.objects.filter(instance_id=pinned.id, target_step_id="sleep")
    wait_until(
        lambda: chunks.filter(status=ChunkStatus.COMPLETED).count() >= 2,
        timeout=120,
        message="the victim running the pinned job",
    )
    assert {node.node_id for node in live_nodes()} >= {live, doomed}, "both nodes' workers beat"

    victim.signal_group(signal.SIGKILL)
    killed_at = time.monotonic()
    wait_until(
        lambda: get_job(pinned.id).ended,
        timeout=3 * RECOVERY_CLAIM_SECONDS,
        while_waiting=run_maintenance_pass,
        message=lambda: f"the pinned job: {get_job(pinned.id)}",
    )
    recovered_after = time.monotonic() - killed_at  # only the claim is timed: kill to the dead node's job ended
    wait_until(
        lambda: get_job(orphan).ended,
        timeout=3 * RECOVERY_CLAIM_SECONDS,
        while_waiting=run_maintenance_pass,
        message=lambda: f"the orphan job: {get_job(orphan)}",
    )

    assert recovered_after < RECOVERY_CLAIM_SECONDS, f"ended {recovered_after:.1f} s after the kill"
    assert chunks.filter(status=ChunkStatus.COMPLETED, worker__startswith="victim-").count() < 20, (
        "the victim was killed mid-job"
    )
    for job_id, from_node in [(pinned.id, doomed), (orphan, f"gone-{live}")]:
        job = get_job(job_id)
        assert (job.status, job.node_id) == (JobStatus.COMPLETED, live)
        assert (
            f"moved from node {from_node} to node {live}: no batch worker of node {from_node} seen"
            in job.warning_messages
        )
    assert chunks.filter(worker__startswith="live-").exists(), "the rest ran on the live node"
    assert doomed not in {node.node_id for node in live_nodes()}
    web_only = start_job_from_the_shell(f"web-{live}", '{"chunks": 2}')
    assert get_job(web_only).node_id == live, "a job started where no worker is starts on a live node at once"
    wait_until(lambda: get_job(web_only).ended, timeout=RECOVERY_CLAIM_SECONDS, message="the web-only node's job")
    assert (get_job(web_only).status, get_job(web_only).warning_messages) == (JobStatus.COMPLETED, None)

    live_worker.stop()  # a clean shutdown: no longer listed as live, though its node keeps its jobs a while
    assert live not in {node.node_id for node in live_nodes()}
