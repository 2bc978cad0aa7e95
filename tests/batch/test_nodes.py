"""Node liveness: workers beat on the database's clock; jobs of a node with no live worker move to a live one."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import timedelta

import pytest
import redis
from django.conf import settings as django_settings
from django.db import connection
from django.db.models.functions import Now
from django.utils import timezone
from freezegun import freeze_time

from batch import control
from batch.control import start_job
from batch.heartbeats import (
    Heartbeat,
    live_nodes,
    record_heartbeat,
    record_stopped,
    start_heartbeat,
)
from batch.maintenance import run_maintenance_pass
from batch.models import JobInstance, JobReassignment, WorkChunk, WorkerHeartbeat
from batch.nodes import JOB_PAGE, reassign_jobs
from batch.queues import work_notification_queue
from batch.statuses import ChunkStatus, JobStatus
from batch.testing import time_passes
from tests.batch.helpers import count_records, emit
from tests.processes import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

TIMEOUT = 10
HEARTBEAT_CEILING = 60  # a heartbeat thread beats every second; a loaded machine may starve it for many


@pytest.fixture(autouse=True)
def node_timeout(settings):
    settings.BATCH_NODE_TIMEOUT_SECONDS = TIMEOUT


@pytest.fixture
def module() -> str:
    """A module id of the test's own: only its nodes' heartbeats count when jobs of it move."""
    return f"m{uuid.uuid4().hex[:8]}"


def seen_ago(worker: str, seconds: float) -> None:
    WorkerHeartbeat.objects.filter(worker=worker).update(last_seen=Now() - timedelta(seconds=seconds))


def aged(instance, seconds: float = TIMEOUT + 1):
    """The job as if started `seconds` ago."""
    JobInstance.objects.filter(id=instance.id).update(create_time=timezone.now() - timedelta(seconds=seconds))
    return instance


def node_of(instance) -> str:
    return JobInstance.objects.get(id=instance.id).node_id


def queues(bus) -> set[str]:
    return {queue for queue, _ in bus.sent}


@pytest.fixture
def two_step_job(define_job):
    return define_job(lambda b: b.first_step("plan", emit(3)).last_step("work", count_records()))


# --- Heartbeats -------------------------------------------------------------------------------------------
def test_a_heartbeat_is_stamped_with_the_database_clock_not_the_hosts(module):
    with freeze_time(timezone.now() - timedelta(hours=1)):  # this host's clock is an hour behind
        record_heartbeat("w1", "node-a", module)

    [node] = live_nodes(module)
    assert (node.node_id, node.module_id, node.workers) == ("node-a", module, ("w1",))
    with connection.cursor() as cursor:
        cursor.execute("SELECT now()")
        assert abs((cursor.fetchone()[0] - node.last_seen).total_seconds()) < 5


def test_live_nodes_are_those_with_a_worker_seen_within_the_timeout_and_not_stopped(module):
    for worker, node in [("a1", "node-a"), ("a2", "node-a"), ("b1", "node-b"), ("c1", "node-c")]:
        record_heartbeat(worker, node, module)
    seen_ago("b1", TIMEOUT + 1)
    record_stopped("c1")

    assert [(node.node_id, node.workers) for node in live_nodes(module)] == [("node-a", ("a1", "a2"))]
    assert control.live_nodes(module) == live_nodes(module), "part of the public control surface"


def test_a_worker_consuming_no_batch_queue_of_its_node_records_no_heartbeat(settings):
    assert not start_heartbeat("scheduler@host/1", {settings.SCHEDULER_QUEUE})
    assert not WorkerHeartbeat.objects.filter(worker="scheduler@host/1").exists()


def test_the_heartbeat_thread_outlives_a_failing_database_and_records_a_clean_stop(settings, module):
    settings.BATCH_NODE_TIMEOUT_SECONDS = 3  # a beat every second
    heartbeat = Heartbeat("beating@host/1", "node-a", module)
    heartbeat.start()
    try:
        wait_until(lambda: WorkerHeartbeat.objects.filter(worker="beating@host/1").exists(), HEARTBEAT_CEILING)
        with connection.cursor() as cursor:  # every beat now fails, as while PostgreSQL restarts
            cursor.execute("ALTER TABLE batch_workerheartbeat RENAME TO batch_workerheartbeat_away")
        try:
            wait_until(lambda: heartbeat.failing, HEARTBEAT_CEILING)
        finally:
            with connection.cursor() as cursor:
                cursor.execute("ALTER TABLE batch_workerheartbeat_away RENAME TO batch_workerheartbeat")
        seen_ago("beating@host/1", 60)
        wait_until(lambda: live_nodes(module), HEARTBEAT_CEILING)
        assert not heartbeat.failing
    finally:
        heartbeat.stop()

    row = WorkerHeartbeat.objects.get(worker="beating@host/1")
    assert row.stopped_at is not None
    assert live_nodes(module) == []


# --- A new job starts where workers are ---------------------------------------------------------------------
def test_a_job_starts_on_this_processs_node_when_it_has_a_live_worker(two_step_job, bus, module, settings):
    settings.NODE_ID = "node-a"
    record_heartbeat("a1", "node-a", module)
    record_heartbeat("b1", "node-b", module)  # idle, but this node is live: the job stays here

    instance = start_job(two_step_job.id, {}, module_id=module)

    assert node_of(instance) == "node-a"
    assert queues(bus) == {work_notification_queue("node-a", module)}


def test_a_job_started_on_a_node_without_live_workers_starts_on_the_least_busy_live_node(
    two_step_job, bus, module, settings
):
    settings.NODE_ID = "web-only"  # a web host: no batch worker of its node, ever
    for worker, node in [("b1", "node-b"), ("c1", "node-c"), ("d1", "node-d")]:
        record_heartbeat(worker, node, module)
    record_heartbeat("e1", "node-e", "another-module")
    seen_ago("d1", TIMEOUT + 1)  # dead
    start_job(two_step_job.id, {}, node_id="node-b", module_id=module)  # node-b is busier than node-c

    instance = start_job(two_step_job.id, {}, module_id=module)

    assert node_of(instance) == "node-c"
    assert work_notification_queue("node-c", module) in queues(bus)
    bus.drain()
    job = control.get_job(instance.id)
    assert (job.status, job.warning_messages) == (JobStatus.COMPLETED, None), "no move, no warning"


def test_a_job_started_on_a_node_whose_workers_all_stopped_starts_on_a_live_one(two_step_job, bus, module, settings):
    settings.NODE_ID = "node-a"
    record_heartbeat("a1", "node-a", module)
    record_heartbeat("b1", "node-b", module)
    record_stopped("a1")

    assert node_of(start_job(two_step_job.id, {}, module_id=module)) == "node-b"


def test_with_no_live_node_of_its_module_a_new_job_starts_on_this_node(two_step_job, bus, module, settings):
    settings.NODE_ID = "web-only"
    record_heartbeat("b1", "node-b", "another-module")

    assert node_of(start_job(two_step_job.id, {}, module_id=module)) == "web-only", (
        "nowhere better: maintenance moves it once a node of its module is up"
    )


# --- Maintenance moves jobs of dead nodes -------------------------------------------------------------------
def test_a_job_of_a_node_that_never_had_a_worker_moves_to_a_live_node_once_older_than_the_timeout(
    two_step_job, bus, module
):
    record_heartbeat("b1", "node-b", module)
    instance = start_job(two_step_job.id, {}, node_id="gone", module_id=module)
    assert queues(bus) == {work_notification_queue("gone", module)}
    bus.take()  # nobody consumes node "gone"

    assert run_maintenance_pass().rehomed == 0, "younger than the timeout: its node may just be starting"
    aged(instance)
    assert run_maintenance_pass().rehomed == 1

    assert node_of(instance) == "node-b"
    assert queues(bus) == {work_notification_queue("node-b", module)}, "its waiting chunk announced there"
    assert not bus.sent_again, "a chunk that never ran queues behind node-b's own retries, as new work"
    bus.drain()
    job = control.get_job(instance.id)
    assert job.status == JobStatus.COMPLETED
    assert (
        f"moved from node gone to node node-b: no batch worker of node gone seen for {TIMEOUT}s" in job.warning_messages
    )


def test_a_job_started_by_a_host_whose_clock_is_behind_is_not_taken_for_old(two_step_job, bus, module):
    record_heartbeat("b1", "node-b", module)
    with freeze_time(timezone.now() - timedelta(hours=1)):  # the starting host's clock is an hour behind
        instance = start_job(two_step_job.id, {}, node_id="gone", module_id=module)
    bus.take()

    assert run_maintenance_pass().rehomed == 0, "its age is the database's: younger than the timeout"
    with connection.cursor() as cursor:
        cursor.execute("SELECT now()")
        database_now = cursor.fetchone()[0]
    created = JobInstance.objects.get(id=instance.id).create_time
    chunk_created = WorkChunk.objects.get(instance_id=instance.id).create_time
    assert abs((database_now - created).total_seconds()) < 5
    assert abs((database_now - chunk_created).total_seconds()) < 5
    assert abs((control.get_job(instance.id).create_time - created).total_seconds()) < 0.001


def test_a_node_keeps_its_jobs_until_its_workers_have_not_beaten_for_the_timeout(two_step_job, bus, module):
    record_heartbeat("a1", "node-a", module)
    record_heartbeat("b1", "node-b", module)
    instance = aged(start_job(two_step_job.id, {}, node_id="node-a", module_id=module))
    bus.take()

    seen_ago("a1", TIMEOUT - 3)
    assert run_maintenance_pass().rehomed == 0
    seen_ago("a1", TIMEOUT + 1)
    assert run_maintenance_pass().rehomed == 1
    assert node_of(instance) == "node-b"


def test_a_cleanly_stopped_node_keeps_its_jobs_for_the_timeout_as_a_restart_grace(two_step_job, bus, module):
    record_heartbeat("a1", "node-a", module)
    record_heartbeat("b1", "node-b", module)
    instance = aged(start_job(two_step_job.id, {}, node_id="node-a", module_id=module))
    record_stopped("a1")

    assert run_maintenance_pass().rehomed == 0
    assert node_of(instance) == "node-a"


def test_jobs_of_a_dead_node_spread_over_live_nodes_least_busy_first(two_step_job, bus, module):
    record_heartbeat("b1", "node-b", module)
    record_heartbeat("c1", "node-c", module)
    start_job(two_step_job.id, {}, node_id="node-c", module_id=module)  # node-c is busier
    stranded = [aged(start_job(two_step_job.id, {}, node_id="dead", module_id=module)) for _ in range(3)]

    assert run_maintenance_pass().rehomed == 3
    assert Counter(node_of(instance) for instance in stranded) == {"node-b": 2, "node-c": 1}


def test_with_no_live_node_of_its_module_a_job_waits_where_it_is(two_step_job, bus, module):
    record_heartbeat("b1", "node-b", "another-module")
    instance = aged(start_job(two_step_job.id, {}, node_id="dead", module_id=module))

    assert run_maintenance_pass().rehomed == 0
    assert node_of(instance) == "dead"


def test_jobs_that_cannot_move_do_not_crowd_out_those_that_can(two_step_job, bus, module):
    record_heartbeat("b1", "node-b", module)
    old = timezone.now() - timedelta(seconds=TIMEOUT + 60)
    JobInstance.objects.bulk_create(
        JobInstance(
            definition_id=two_step_job.id,
            definition_version=1,
            node_id="dead",
            module_id="a-module-with-no-live-node",
            create_time=old,
        )
        for _ in range(JOB_PAGE + 1)
    )  # older, and more than one pass's page
    movable = aged(start_job(two_step_job.id, {}, node_id="dead", module_id=module))

    assert run_maintenance_pass().rehomed == 1
    assert node_of(movable) == "node-b"


def test_a_finalizing_job_gets_its_reduction_announced_on_the_new_node(define_job, bus, module):
    def total(context, inputs):
        return {"chunks": sum(1 for _ in inputs)}

    job = define_job(
        lambda b: (
            b.gated().first_step("plan", emit(2)).intermediate_step("work", pass_on).reduction_step("total", total)
        )
    )
    instance = aged(start_job(job.id, {}, node_id="dead", module_id=module))
    for _ in range(3):
        bus.deliver_next()
    assert JobInstance.objects.get(id=instance.id).status == JobStatus.FINALIZE
    bus.take()  # the reduction's announcement sits in the dead node's queue
    record_heartbeat("b1", "node-b", module)

    assert run_maintenance_pass().rehomed == 1
    [(queue, message)] = bus.sent
    assert (queue, "chunkId" in message) == (work_notification_queue("node-b", module), False)
    assert bus.sent_again == bus.sent, "the reduction was announced before: it goes ahead of node-b's new work"
    bus.drain()
    assert control.get_job(instance.id).report == {"chunks": 2}


def pass_on(context, sink) -> int:
    sink.accept(dict(context.data))
    return 1


# --- Operators move jobs ------------------------------------------------------------------------------------
def test_an_operator_moves_a_nodes_jobs_to_a_named_live_node(two_step_job, bus, module):
    record_heartbeat("a1", "node-a", module)
    record_heartbeat("b1", "node-b", module)
    instance = start_job(two_step_job.id, {}, node_id="node-a", module_id=module)
    bus.take()

    [move] = reassign_jobs(from_node="node-a", to_node="node-b")

    assert (move.job_id, move.from_node_id, move.to_node_id, move.announced_chunks) == (
        instance.id,
        "node-a",
        "node-b",
        1,
    )
    assert queues(bus) == {work_notification_queue("node-b", module)}
    assert (
        "moved from node node-a to node node-b: reassigned by an operator"
        in control.get_job(instance.id).warning_messages
    )


def test_without_a_target_an_operator_moves_a_job_to_the_least_busy_other_live_node(two_step_job, bus, module):
    for worker, node in [("a1", "node-a"), ("b1", "node-b"), ("c1", "node-c")]:
        record_heartbeat(worker, node, module)
    start_job(two_step_job.id, {}, node_id="node-b", module_id=module)
    instance = start_job(two_step_job.id, {}, node_id="node-a", module_id=module)

    [move] = reassign_jobs(job_id=str(instance.id))

    assert move.to_node_id == "node-c"


def test_a_move_to_a_node_without_live_workers_is_refused_unless_forced(two_step_job, bus, module):
    record_heartbeat("a1", "node-a", module)
    instance = start_job(two_step_job.id, {}, node_id="node-a", module_id=module)

    with pytest.raises(control.NoLiveNode, match="node node-z has no batch worker of module"):
        reassign_jobs(from_node="node-a", to_node="node-z")
    assert node_of(instance) == "node-a"
    with pytest.raises(control.NoLiveNode, match="no other node has a live batch worker"):
        reassign_jobs(from_node="node-a")

    [move] = reassign_jobs(from_node="node-a", to_node="node-z", force=True)
    assert move.to_node_id == node_of(instance) == "node-z"


def test_a_forced_move_to_a_node_not_yet_up_sticks_until_that_node_has_beaten(two_step_job, bus, module):
    record_heartbeat("a1", "node-a", module)
    instance = aged(start_job(two_step_job.id, {}, node_id="node-a", module_id=module))
    reassign_jobs(job_id=instance.id, to_node="node-z", force=True)  # node-z is about to come up
    bus.take()

    assert run_maintenance_pass().rehomed == 0, "the operator's word holds while node-z has not beaten"
    assert node_of(instance) == "node-z"
    assert "forced to a node with no live worker" in control.get_job(instance.id).warning_messages

    JobReassignment.objects.filter(instance_id=instance.id).update(at=Now() - timedelta(seconds=TIMEOUT + 5))
    record_heartbeat("z1", "node-z", module)  # node-z came up after the move ...
    seen_ago("z1", TIMEOUT + 1)  # ... and died: now it is a node like any other
    assert run_maintenance_pass().rehomed == 1
    assert node_of(instance) == "node-a"


@pytest.mark.parametrize(
    "arguments, error, message",
    [
        ({}, control.BatchError, "name the jobs to move"),
        ({"from_node": "a b"}, control.BatchError, "invalid from node 'a b'"),
        ({"from_node": "node-a", "to_node": "node-a"}, control.BatchError, "on node node-a already"),
        ({"job_id": "not-a-job"}, control.JobNotFound, "no job instance not-a-job"),
    ],
)
def test_bad_requests_to_move_jobs_are_refused_with_the_reason(arguments, error, message):
    with pytest.raises(error, match=message):
        reassign_jobs(**arguments)


def test_an_ended_job_or_one_on_another_node_is_not_moved(two_step_job, bus, module):
    record_heartbeat("b1", "node-b", module)
    instance = start_job(two_step_job.id, {}, node_id="node-a", module_id=module)

    with pytest.raises(control.JobStateConflict, match="is on node node-a, not on node node-c"):
        reassign_jobs(job_id=instance.id, from_node="node-c")
    control.cancel_job(instance.id)
    with pytest.raises(control.JobStateConflict, match="has ended"):
        reassign_jobs(job_id=instance.id)


def test_a_job_moved_off_a_dead_node_keeps_its_retrys_backoff(define_job, bus, module, settings):
    settings.BATCH_RETRY_BACKOFF_SECONDS = (30.0,)

    def fails_first(context, sink) -> int:
        if context.attempt == 1:
            raise RuntimeError("first attempt")
        return 1

    job = define_job(lambda b: b.first_step("plan", emit(1)).last_step("work", fails_first))
    instance = aged(start_job(job.id, {}, node_id="dead", module_id=module))
    bus.deliver_next()
    bus.deliver_next()  # ERRORED: its retry is due in 30 s
    bus.take()  # the retry's message sits in the dead node's queue
    retry_due = WorkChunk.objects.get(instance_id=instance.id, target_step_id="work").announced_at
    record_heartbeat("b1", "node-b", module)

    assert run_maintenance_pass().rehomed == 1

    assert WorkChunk.objects.get(instance_id=instance.id, target_step_id="work").announced_at == retry_due
    [retry] = bus.take()
    bus.deliver(retry)  # announced on node-b at once, or duplicated: before its time there is nothing to claim
    chunk = WorkChunk.objects.get(instance_id=instance.id, target_step_id="work")
    assert (chunk.status, chunk.attempts) == (ChunkStatus.ERRORED, 1)
    with time_passes(30):
        bus.deliver(retry)
    assert control.get_job(instance.id).status == JobStatus.COMPLETED


def test_a_dead_nodes_stale_messages_are_deleted_once_its_last_job_has_moved(two_step_job, bus, module):
    broker = redis.Redis.from_url(django_settings.CELERY_BROKER_URL)
    dead_queue = work_notification_queue("gone", module)
    record_heartbeat("b1", "node-b", module)
    aged(start_job(two_step_job.id, {}, node_id="gone", module_id=module))
    young = start_job(two_step_job.id, {}, node_id="gone", module_id=module)  # too young to move yet
    bus.take()
    broker.rpush(dead_queue, "a message nobody will consume")
    try:
        assert run_maintenance_pass().rehomed == 1
        assert broker.llen(dead_queue) == 1, "a job is still on the node: its queue stays"
        aged(young)
        assert run_maintenance_pass().rehomed == 1
        assert not broker.exists(dead_queue), "stale: every chunk it announced was announced on node-b"
    finally:
        broker.delete(dead_queue)
