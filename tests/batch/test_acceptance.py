"""Acceptance: real `celery worker` processes, real Redis, real PostgreSQL.

Two worker processes of one node are shared by the tests of this module (starting workers is what
costs time); tests that need another node or a worker to kill start their own. The fault tests also
start what production has: `celery beat` and the scheduler worker, which run the clustered
`batch.maintenance` job every second. The test only injects the fault and watches; it never calls
maintenance itself.

Chunks of the TEST_LOGGED job wait while a "hold" file exists, so a fault lands while the work is known
to be in flight, however slow the machine is.
"""

from __future__ import annotations

import signal
import uuid
from collections import Counter
from pathlib import Path

import pytest
import redis
from django.conf import settings as django_settings

from batch.control import cancel_job, restart_job, start_job
from batch.models import JobInstance, WorkChunk
from batch.notifications import WorkNotification
from batch.queues import broker_lists, pending_notifications, work_notification_queue
from batch.statuses import ENDED_JOB_STATUSES, ChunkStatus, JobStatus
from batch.tasks import publish_work_notifications
from scheduling.models import JobRun, RunOutcome
from tests.batch.helpers import unique_node
from tests.isolation import flush_test_redis
from tests.processes import (
    Process,
    celery_beat,
    celery_worker,
    scheduler_worker,
    start_all,
    stop_all,
    wait_until,
    wait_until_beating,
    wait_until_ready,
)

pytestmark = [pytest.mark.acceptance, pytest.mark.django_db(transaction=True)]

NODE = unique_node()
SHARED_WORKERS = ("shared-a", "shared-b")
JOB_END = 120  # ceiling for a job of a few dozen short chunks, recovery included, on a loaded machine
MAINTENANCE_INTERVAL_SECONDS = 1
REANNOUNCE_AFTER_SECONDS = 2


def worker_env(node: str, **extra: str) -> dict[str, str]:
    return {"NODE_ID": node, "DJANGO_SETTINGS_MODULE": "tests.batch.worker_settings", **extra}


@pytest.fixture(scope="module")
def node_workers(django_db_setup, django_db_blocker):
    """Two single-process workers of NODE, consuming its batch queue."""
    with django_db_blocker.unblock():
        workers = [celery_worker(env=worker_env(NODE), concurrency=1, name=name, wait=False) for name in SHARED_WORKERS]
        try:
            start_all(workers, wait_until_ready)
        except BaseException:
            stop_all(workers)
            raise
    yield workers
    stop_all(workers)


@pytest.fixture
def maintenance_by_beat(processes) -> Process:
    """Beat and a scheduler worker, as in production: `batch.maintenance` runs every second; the scheduler."""
    env = worker_env(
        f"{NODE}-scheduling",
        SCHEDULER_QUEUE=f"scheduled-{uuid.uuid4().hex[:8]}",
        SCHEDULER_THREAD_COUNT="1",
        BATCH_MAINTENANCE_INTERVAL_SECONDS=str(MAINTENANCE_INTERVAL_SECONDS),
        BATCH_REANNOUNCE_AFTER_SECONDS=str(REANNOUNCE_AFTER_SECONDS),
    )
    scheduler, beat = scheduler_worker(env), celery_beat(env)
    processes.extend([scheduler, beat])
    wait_until_ready(scheduler)
    wait_until_beating(beat)
    return scheduler


@pytest.fixture
def hold(tmp_path) -> Path:
    """While this file exists, TEST_LOGGED chunks that have started wait (checking for a cancel)."""
    path = tmp_path / "hold"
    path.touch()
    return path


def job(instance) -> JobInstance:
    return JobInstance.objects.get(id=instance.id)


def has_ended(instance) -> bool:
    return job(instance).status in ENDED_JOB_STATUSES


def wait_for_the_end(instance) -> JobInstance:
    wait_until(
        lambda: has_ended(instance), timeout=JOB_END, message=lambda: f"{job(instance)}: {chunk_states(instance)}"
    )
    return job(instance)


def chunks(instance, step_id: str):
    return WorkChunk.objects.filter(instance_id=instance.id, target_step_id=step_id)


def chunk_states(instance) -> Counter:
    return Counter(WorkChunk.objects.filter(instance_id=instance.id).values_list("status", flat=True))


def running(instance, count: int, worker_prefix: str = ""):
    """Wait until `count` chunks of the log step are IN_PROGRESS (on workers named `worker_prefix`...)."""
    in_progress = chunks(instance, "log").filter(status=ChunkStatus.IN_PROGRESS, worker__startswith=worker_prefix)
    return wait_until(
        lambda: list(in_progress) if in_progress.count() >= count else None,
        timeout=JOB_END,
        message=lambda: f"{count} chunks running: {chunk_states(instance)}",
    )


def logged(log: Path) -> Counter:
    return Counter(int(line) for line in log.read_text().split()) if log.exists() else Counter()


def ran_on(chunk: WorkChunk) -> str:
    """The worker name a chunk ran on (hostnames are `<name>-<pid>-<ns>@host/<pool pid>`)."""
    return next(name for name in [*SHARED_WORKERS, "other-node", "victim"] if chunk.worker.startswith(name + "-"))


def maintenance_ran() -> bool:
    return JobRun.objects.filter(job_name="batch.maintenance", outcome=RunOutcome.SUCCEEDED).exists()


def test_two_workers_of_a_node_share_a_jobs_chunks(node_workers, logged_job, hold, tmp_path):
    instance = start_job(
        logged_job.id, {"chunks": 8, "log": str(tmp_path / "log"), "hold_while": str(hold)}, node_id=NODE
    )
    both = running(instance, 2)  # each single-process worker holds one chunk: the other must take the next

    hold.unlink()

    assert wait_for_the_end(instance).status == JobStatus.COMPLETED
    assert {ran_on(chunk) for chunk in both} == set(SHARED_WORKERS)
    assert {ran_on(chunk) for chunk in chunks(instance, "log")} <= set(SHARED_WORKERS)


def test_two_nodes_keep_their_own_queues(node_workers, processes):
    other = unique_node()
    processes.append(celery_worker(env=worker_env(other), concurrency=1, name="other-node"))

    mine = start_job("DIAGNOSTIC_NOOP", {"chunks": 6, "sleep_ms": 50}, node_id=NODE)
    theirs = start_job("DIAGNOSTIC_NOOP", {"chunks": 6, "sleep_ms": 50}, node_id=other)
    wait_for_the_end(mine)
    wait_for_the_end(theirs)

    assert {ran_on(chunk) for chunk in chunks(mine, "sleep")} <= set(SHARED_WORKERS)
    assert {ran_on(chunk) for chunk in chunks(theirs, "sleep")} == {"other-node"}


def test_beat_recovers_the_chunk_of_a_worker_killed_mid_chunk_and_every_chunk_completes_once(
    node_workers, maintenance_by_beat, processes, logged_job, hold, tmp_path
):
    victim = celery_worker(env=worker_env(NODE, BATCH_LEASE_SECONDS="2"), concurrency=1, name="victim")
    processes.append(victim)
    log = tmp_path / "finished"
    instance = start_job(logged_job.id, {"chunks": 9, "log": str(log), "hold_while": str(hold)}, node_id=NODE)
    [doomed] = running(instance, 1, worker_prefix="victim-")

    victim.signal_group(signal.SIGKILL)
    victim.popen.wait(30)
    hold.unlink()

    assert wait_for_the_end(instance).status == JobStatus.COMPLETED
    doomed.refresh_from_db()
    assert (doomed.status, doomed.attempts, doomed.error_count) == (ChunkStatus.COMPLETED, 2, 1)
    assert doomed.error_message.startswith("Worker lost: victim-")
    assert ran_on(doomed) in SHARED_WORKERS
    assert logged(log) == Counter(range(9)), "every chunk ran to its end exactly once"
    assert maintenance_ran(), "beat's maintenance found the lapsed lease; the test did not help"


def test_beat_recovers_a_job_whose_messages_were_flushed_from_redis(
    node_workers, maintenance_by_beat, logged_job, hold, tmp_path
):
    log = tmp_path / "finished"
    instance = start_job(logged_job.id, {"chunks": 12, "log": str(log), "hold_while": str(hold)}, node_id=NODE)
    queue = work_notification_queue(NODE, django_settings.MODULE_ID)
    running(instance, 2)
    wait_until(lambda: pending_notifications(queue) == 10, timeout=JOB_END, message="ten announcements waiting")

    flush_test_redis()  # this run's own Redis database: the ten waiting announcements are gone
    hold.unlink()

    assert wait_for_the_end(instance).status == JobStatus.COMPLETED
    assert logged(log) == Counter(range(12))
    assert "chunk announcements were lost; announced again" in maintenance_by_beat.output()


def test_messages_delivered_twice_run_their_chunk_once_and_lost_ones_are_announced_again_by_beat(
    node_workers, maintenance_by_beat, logged_job, hold, tmp_path
):
    log = tmp_path / "finished"
    instance = start_job(logged_job.id, {"chunks": 10, "log": str(log), "hold_while": str(hold)}, node_id=NODE)
    queue = work_notification_queue(NODE, django_settings.MODULE_ID)
    running(instance, 2)
    wait_until(lambda: pending_notifications(queue) == 8, timeout=JOB_END, message="eight announcements waiting")
    waiting = WorkChunk.objects.filter(instance_id=instance.id, target_step_id="log", status=ChunkStatus.QUEUED)
    queued = list(waiting.order_by("sequence"))

    broker = redis.Redis.from_url(django_settings.CELERY_BROKER_URL)
    broker.delete(*broker_lists(queue))  # all eight waiting announcements lost ...
    duplicated = queued[:4] + running(instance, 2)
    publish_work_notifications(
        queue,
        [  # ... four of them, and the two running chunks', delivered twice
            WorkNotification(instance.id, logged_job.id, 1, "log", chunk.id).to_message() for chunk in duplicated * 2
        ],
    )
    hold.unlink()

    assert wait_for_the_end(instance).status == JobStatus.COMPLETED
    assert logged(log) == Counter(range(10)), "each chunk ran to its end once"
    assert set(chunks(instance, "log").values_list("attempts", flat=True)) == {1}
    assert "chunk announcements were lost; announced again" in maintenance_by_beat.output()


def test_a_cancel_during_a_long_step_stops_it_and_releases_its_chunk(node_workers):
    instance = start_job("DIAGNOSTIC_NOOP", {"chunks": 1, "sleep_ms": 600_000}, node_id=NODE)
    running_chunk = wait_until(
        lambda: chunks(instance, "sleep").filter(status=ChunkStatus.IN_PROGRESS).first(), timeout=JOB_END
    )

    cancel_job(instance.id)
    # Ten minutes of sleep end long before this ceiling only if the step noticed the cancel.
    wait_until(lambda: chunks(instance, "sleep").get().status != ChunkStatus.IN_PROGRESS, timeout=JOB_END)

    running_chunk.refresh_from_db()
    assert (running_chunk.status, running_chunk.error_count) == (ChunkStatus.READY, 0)
    assert job(instance).status == JobStatus.CANCELLED


def test_a_restart_after_a_failure_does_not_redo_completed_chunks(node_workers, logged_job, tmp_path):
    log, broken = tmp_path / "finished", tmp_path / "broken"
    broken.touch()
    instance = start_job(
        logged_job.id,
        {"chunks": 8, "sleep_ms": 100, "log": str(log), "fail_index": 5, "fail_while": str(broken)},
        node_id=NODE,
    )
    assert wait_for_the_end(instance).status == JobStatus.FAILED
    wait_until(lambda: not chunks(instance, "log").filter(status=ChunkStatus.IN_PROGRESS).exists(), timeout=JOB_END)
    finished_before = logged(log)

    broken.unlink()
    restart_job(instance.id)

    assert wait_for_the_end(instance).status == JobStatus.COMPLETED
    assert 5 not in finished_before
    assert logged(log) == Counter(range(8)), "each chunk finished once: none of the first run's was redone"
