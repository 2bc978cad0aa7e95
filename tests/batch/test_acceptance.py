"""Acceptance: real `celery worker` processes, real Redis, real PostgreSQL.

Two worker processes of one node are shared by the tests of this module (starting workers is what
costs time); tests that need another node or a worker to kill start their own.
"""
from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
import redis

from batch.coordinator import cancel_job, restart_job, start_job
from batch.maintenance import run_maintenance_pass
from batch.models import JobInstance, WorkChunk
from batch.notifications import WorkNotification
from batch.queues import work_notification_queue
from batch.registry import registry
from batch.statuses import ENDED_JOB_STATUSES, ChunkStatus, JobStatus
from batch.tasks import publish_work_notifications
from tests.batch.conftest import unique_node
from tests.batch.testjobs.definition import LOGGED_JOB
from tests.processes import celery_worker

pytestmark = [pytest.mark.acceptance, pytest.mark.django_db(transaction=True)]

NODE = unique_node()
SHARED_WORKERS = ("shared-a", "shared-b")
T = TypeVar("T")


def worker_env(node: str, **extra: str) -> dict[str, str]:
    return {"NODE_ID": node, "DJANGO_SETTINGS_MODULE": "tests.batch.worker_settings", **extra}


@pytest.fixture(scope="module")
def node_workers(django_db_setup, django_db_blocker):
    """Two single-process workers of NODE, consuming its batch queue."""
    with django_db_blocker.unblock():
        workers = [celery_worker(env=worker_env(NODE), concurrency=1, name=name) for name in SHARED_WORKERS]
    yield workers
    for worker in workers:
        worker.stop()


@pytest.fixture
def logged_job():
    registry.register(LOGGED_JOB)
    yield LOGGED_JOB
    registry.unregister(LOGGED_JOB.id, LOGGED_JOB.version)


def wait_until(condition: Callable[[], T], timeout: float, while_waiting: Callable[[], object] = lambda: None) -> T:
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, f"not within {timeout}s"
        while_waiting()
        time.sleep(0.2)
    return result


def job(instance) -> JobInstance:
    return JobInstance.objects.get(id=instance.id)


def has_ended(instance) -> bool:
    return job(instance).status in ENDED_JOB_STATUSES


def chunks(instance, step_id: str):
    return WorkChunk.objects.filter(instance_id=instance.id, target_step_id=step_id)


def logged(log: Path) -> Counter:
    return Counter(int(line) for line in log.read_text().split()) if log.exists() else Counter()


def ran_on(chunk: WorkChunk) -> str:
    """The worker name a chunk ran on (hostnames are `<name>-<pid>-<ns>@host/<pool pid>`)."""
    return next(name for name in [*SHARED_WORKERS, "other-node", "victim"] if chunk.worker.startswith(name + "-"))


def test_two_workers_of_a_node_share_a_jobs_chunks(node_workers):
    instance = start_job("DIAGNOSTIC_NOOP", {"chunks": 16, "sleep_ms": 100}, node_id=NODE)

    wait_until(lambda: has_ended(instance), timeout=30)

    assert job(instance).status == JobStatus.COMPLETED
    assert {ran_on(chunk) for chunk in chunks(instance, "sleep")} == set(SHARED_WORKERS)


def test_two_nodes_keep_their_own_queues(node_workers, processes):
    other = unique_node()
    processes.append(celery_worker(env=worker_env(other), concurrency=1, name="other-node"))

    mine = start_job("DIAGNOSTIC_NOOP", {"chunks": 6, "sleep_ms": 50}, node_id=NODE)
    theirs = start_job("DIAGNOSTIC_NOOP", {"chunks": 6, "sleep_ms": 50}, node_id=other)
    wait_until(lambda: has_ended(mine) and has_ended(theirs), timeout=30)

    assert {ran_on(chunk) for chunk in chunks(mine, "sleep")} <= set(SHARED_WORKERS)
    assert {ran_on(chunk) for chunk in chunks(theirs, "sleep")} == {"other-node"}


def test_a_worker_killed_mid_chunk_costs_a_retry_and_every_chunk_completes_once(
        node_workers, processes, logged_job, tmp_path):
    victim = celery_worker(env=worker_env(NODE, BATCH_LEASE_SECONDS="2"), concurrency=1, name="victim")
    processes.append(victim)
    log = tmp_path / "finished"
    instance = start_job(logged_job.id, {"chunks": 9, "sleep_ms": 1500, "log": str(log)}, node_id=NODE)
    doomed = wait_until(lambda: chunks(instance, "log").filter(status=ChunkStatus.IN_PROGRESS,
                                                               worker__startswith="victim-").first(), timeout=30)

    victim.signal_group(signal.SIGKILL)
    killed_at = time.monotonic()
    wait_until(lambda: has_ended(instance), timeout=40, while_waiting=run_maintenance_pass)

    assert job(instance).status == JobStatus.COMPLETED
    assert time.monotonic() - killed_at < 30
    doomed.refresh_from_db()
    assert (doomed.status, doomed.attempts, doomed.error_count) == (ChunkStatus.COMPLETED, 2, 1)
    assert doomed.error_message.startswith("Worker lost: victim-")
    assert logged(log) == Counter(range(9)), "every chunk ran to its end exactly once"


def test_the_job_completes_after_redis_is_flushed_mid_job(node_workers, settings):
    settings.BATCH_REANNOUNCE_AFTER_SECONDS = 1
    instance = start_job("DIAGNOSTIC_NOOP", {"chunks": 24, "sleep_ms": 100}, node_id=NODE)
    wait_until(lambda: chunks(instance, "sleep").filter(status=ChunkStatus.COMPLETED).count() >= 3, timeout=30)

    redis.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()  # this test's own Redis database
    reannounced = []
    wait_until(lambda: has_ended(instance), timeout=40,
               while_waiting=lambda: reannounced.append(run_maintenance_pass().reannounced))

    assert job(instance).status == JobStatus.COMPLETED
    assert sum(reannounced) > 0, "the lost messages were announced again"
    assert chunks(instance, "sleep").filter(status=ChunkStatus.COMPLETED).count() == 24


def test_the_same_chunk_message_delivered_twice_is_processed_once(node_workers, logged_job, tmp_path, settings):
    log = tmp_path / "finished"
    instance = start_job(logged_job.id, {"chunks": 10, "sleep_ms": 100, "log": str(log)}, node_id=NODE)
    queued = wait_until(lambda: list(chunks(instance, "log")) if chunks(instance, "log").count() == 10 else None,
                        timeout=30)

    publish_work_notifications(work_notification_queue(NODE, settings.MODULE_ID), [
        WorkNotification(instance.id, logged_job.id, 1, "log", chunk.id).to_message() for chunk in queued
    ])
    wait_until(lambda: has_ended(instance), timeout=30)

    assert job(instance).status == JobStatus.COMPLETED
    assert logged(log) == Counter(range(10))
    assert set(chunks(instance, "log").values_list("attempts", flat=True)) == {1}


def test_a_cancel_during_a_long_step_stops_it_within_seconds(node_workers):
    instance = start_job("DIAGNOSTIC_NOOP", {"chunks": 1, "sleep_ms": 60_000}, node_id=NODE)
    running = wait_until(lambda: chunks(instance, "sleep").filter(status=ChunkStatus.IN_PROGRESS).first(),
                         timeout=30)

    cancel_job(instance.id)
    cancelled_at = time.monotonic()
    wait_until(lambda: chunks(instance, "sleep").get().status != ChunkStatus.IN_PROGRESS, timeout=10)

    assert time.monotonic() - cancelled_at < 3
    running.refresh_from_db()
    assert (running.status, running.error_count) == (ChunkStatus.READY, 0)
    assert job(instance).status == JobStatus.CANCELLED


def test_a_restart_after_a_failure_does_not_redo_completed_chunks(node_workers, logged_job, tmp_path):
    log, broken = tmp_path / "finished", tmp_path / "broken"
    broken.touch()
    instance = start_job(logged_job.id, {"chunks": 8, "sleep_ms": 100, "log": str(log), "fail_index": 5,
                                         "fail_while": str(broken)}, node_id=NODE)
    wait_until(lambda: has_ended(instance), timeout=30)
    assert job(instance).status == JobStatus.FAILED
    wait_until(lambda: not chunks(instance, "log").filter(status=ChunkStatus.IN_PROGRESS).exists(), timeout=10)
    finished_before = logged(log)

    broken.unlink()
    restart_job(instance.id)
    wait_until(lambda: has_ended(instance), timeout=30)

    assert job(instance).status == JobStatus.COMPLETED
    assert 5 not in finished_before
    assert logged(log) == Counter(range(8)), "each chunk finished once: none of the first run's was redone"
