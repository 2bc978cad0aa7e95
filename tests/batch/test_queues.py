"""A node's queue serves work announced again before new work: real Redis, and real `celery worker` processes.

A node's queue may hold thousands of new chunks. A chunk retried after an error, or after its worker was
lost, is announced again at the priority Redis serves first, so it runs once its backoff has passed,
not once that backlog has drained. The order chunks ran in is read from their end times (the database's
clock), never from how long anything took.
"""

from __future__ import annotations

import signal
import uuid
from pathlib import Path

import pytest
import redis
from django.conf import settings as django_settings

from batch.control import start_job
from batch.maintenance import run_maintenance_pass
from batch.models import JobInstance, WorkChunk
from batch.notifications import WorkNotification
from batch.queues import broker_lists, pending_notifications, work_notification_queue
from batch.statuses import ENDED_JOB_STATUSES, ChunkStatus, JobStatus
from batch.tasks import publish_work_notifications
from tests.batch.helpers import unique_node
from tests.processes import celery_worker, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

BACKLOG = 120  # new chunks, each in a message of its own (fewer than 128: see flow.announce_chunks)
CHUNK_MS = 20  # each chunk takes at least this (TEST_LOGGED sleeps in slices of 50 ms): the backlog takes seconds
JOB_END = 180  # ceiling for the backlog, recovery included, on a loaded machine


def worker_env(node: str, **extra: str) -> dict[str, str]:
    return {"NODE_ID": node, "DJANGO_SETTINGS_MODULE": "tests.batch.worker_settings", **extra}


def log_chunks(instance: JobInstance):
    return WorkChunk.objects.filter(instance_id=instance.id, target_step_id="log")


def wait_for_the_end(instance: JobInstance) -> JobInstance:
    def ended() -> JobInstance | None:
        current = JobInstance.objects.get(id=instance.id)
        return current if current.status in ENDED_JOB_STATUSES else None

    return wait_until(ended, timeout=JOB_END, message=lambda: f"job {instance.id} still running")


def finished_after(chunk: WorkChunk) -> int:
    """How many other chunks of its job's backlog ran to their end after `chunk` did."""
    return log_chunks(chunk.instance).filter(end_time__gt=chunk.end_time).count()


def test_work_announced_again_waits_in_the_list_served_first_and_both_lists_count_as_pending():
    queue = work_notification_queue(unique_node(), django_settings.MODULE_ID)
    message = WorkNotification(uuid.uuid4(), "ANY", 1, "step", uuid.uuid4()).to_message()
    broker = redis.Redis.from_url(django_settings.CELERY_BROKER_URL)
    served_first, new_work = broker_lists(queue)
    try:
        publish_work_notifications(queue, [message, message])
        publish_work_notifications(queue, [message], again=True)

        assert (broker.llen(served_first), broker.llen(new_work)) == (1, 2)
        assert served_first == queue, "work announced again keeps the queue's own list"
        assert pending_notifications(queue) == 3
    finally:
        broker.delete(served_first, new_work)


@pytest.mark.acceptance
def test_a_chunk_retried_after_an_error_runs_before_the_backlog_of_new_chunks_drains(processes, logged_job, tmp_path):
    node = unique_node()
    processes.append(celery_worker(env=worker_env(node, BATCH_RETRY_BACKOFF_SECONDS="0.2"), concurrency=1, name="lone"))

    instance = start_job(
        logged_job.id,
        {"chunks": BACKLOG, "sleep_ms": CHUNK_MS, "log": str(tmp_path / "log"), "error_index": 0},
        node_id=node,
    )

    assert wait_for_the_end(instance).status == JobStatus.COMPLETED
    retried = log_chunks(instance).get(error_count=1)
    assert (retried.status, retried.attempts) == (ChunkStatus.COMPLETED, 2)
    # Behind the backlog it would have run last; ahead of it, right after its backoff.
    assert finished_after(retried) >= BACKLOG // 2


@pytest.mark.acceptance
def test_the_chunk_of_a_lost_worker_runs_before_the_backlog_of_new_chunks_drains(
    processes, logged_job, tmp_path, settings
):
    node = unique_node()
    hold = tmp_path / "hold"
    hold.touch()
    victim = celery_worker(env=worker_env(node, BATCH_LEASE_SECONDS="2"), concurrency=1, name="victim")
    processes.append(victim)
    instance = start_job(
        logged_job.id,
        {"chunks": BACKLOG, "sleep_ms": CHUNK_MS, "log": str(tmp_path / "log"), "hold_while": str(hold)},
        node_id=node,
    )
    doomed = wait_until(lambda: log_chunks(instance).filter(status=ChunkStatus.IN_PROGRESS).first(), timeout=JOB_END)
    victim.signal_group(signal.SIGKILL)
    victim.popen.wait(30)
    processes.append(celery_worker(env=worker_env(node), concurrency=1, name="survivor"))
    wait_until(
        lambda: log_chunks(instance).filter(status=ChunkStatus.IN_PROGRESS, worker__startswith="survivor-").exists(),
        timeout=JOB_END,
        message="the survivor holds a chunk of the backlog",
    )

    settings.BATCH_RETRY_BACKOFF_SECONDS = (0.2,)
    # Maintenance (here, in the test) finds the lapsed lease and announces the chunk again ...
    wait_until(lambda: run_maintenance_pass().leases_expired, timeout=JOB_END, message="the lease lapses")
    assert pending_notifications(work_notification_queue(node, django_settings.MODULE_ID)) >= BACKLOG // 2
    Path(hold).unlink()  # ... while the rest of the backlog still waits

    assert wait_for_the_end(instance).status == JobStatus.COMPLETED
    doomed.refresh_from_db()
    assert (doomed.status, doomed.attempts, doomed.error_count) == (ChunkStatus.COMPLETED, 2, 1)
    assert doomed.error_message.startswith("Worker lost: victim-")
    assert finished_after(doomed) >= BACKLOG // 2
