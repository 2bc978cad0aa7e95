"""Issue #29 item 2: a step that spins holding the GIL (a catastrophic regular expression in C) wedges its
whole pool process: its lease keeper never runs. The worker's main process kills that process once the
chunk is past its maximum run time, and the chunk is retried in a fresh one."""

from __future__ import annotations

import time

import pytest

from batch.control import start_job
from batch.models import JobInstance, WorkChunk
from batch.statuses import ENDED_JOB_STATUSES, JobStatus
from tests.batch.helpers import unique_node
from tests.processes import celery_worker, wait_until

pytestmark = [pytest.mark.acceptance, pytest.mark.django_db(transaction=True)]

MAX_CHUNK_SECONDS = 4
FEW_SECONDS = 8  # the watchdog's grace (3 s) and poll (1 s), the kill and the retry, on a busy 2-core machine


def test_a_pool_process_spinning_with_the_gil_held_is_killed_and_its_chunk_retried(processes, django_db_blocker):
    node = unique_node()
    env = {
        "NODE_ID": node,
        "DJANGO_SETTINGS_MODULE": "tests.batch.worker_settings",
        "BATCH_DIAGNOSTIC_JOBS": "true",
        "BATCH_MAX_CHUNK_SECONDS": str(MAX_CHUNK_SECONDS),
        "BATCH_LEASE_SECONDS": "120",
    }  # the lease cannot rescue it in time: only the watchdog can
    with django_db_blocker.unblock():
        worker = celery_worker(env=env, concurrency=2, name="spinner")
    processes.append(worker)

    instance = start_job("DIAGNOSTIC_SPIN", {"chunks": 3, "sleep_ms": 10, "spin_at_chunk": 1}, node_id=node)
    spinning = wait_until(
        lambda: WorkChunk.objects.filter(
            instance_id=instance.id, target_step_id="sleep", sequence=1, status="IN_PROGRESS"
        ).first(),
        timeout=60,
        message="the spinning chunk claimed",
    )
    claimed_at = time.monotonic()
    wait_until(
        lambda: JobInstance.objects.get(id=instance.id).status in ENDED_JOB_STATUSES,
        timeout=MAX_CHUNK_SECONDS + FEW_SECONDS + 20,
        message="the job's end",
    )

    ended = time.monotonic() - claimed_at
    assert JobInstance.objects.get(id=instance.id).status == JobStatus.COMPLETED
    spinning.refresh_from_db()
    assert (spinning.attempts, spinning.error_count) == (2, 1)
    assert "process" in spinning.error_message and "killed" in spinning.error_message
    assert ended < MAX_CHUNK_SECONDS + FEW_SECONDS, f"recycled and retried after {ended:.1f} s"
    assert "did not stop: killing it" in worker.output()
