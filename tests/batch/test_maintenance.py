"""Maintenance recovers what the broker and dead processes lose, and only one pass runs at a time."""

import pytest
import redis
from django.conf import settings as django_settings
from django.db import connection

from batch.control import cancel_job, get_job, start_job
from batch.maintenance import run_maintenance_pass
from batch.maintenance_lease import LeaseLost, MaintenanceLease
from batch.models import JobInstance, WorkChunk
from batch.queues import work_notification_queue
from batch.reduction import on_reduction_claimed
from batch.statuses import ChunkStatus, JobStatus
from batch.testing import time_passes
from batch.worker import on_chunk_claimed
from tests.batch.helpers import count_records, emit, unique_node

pytestmark = pytest.mark.django_db(transaction=True)


def later(seconds: float):
    return time_passes(seconds)


def test_a_chunk_whose_worker_died_is_retried_after_its_lease(define_job, bus, settings):
    job = define_job(lambda b: b.first_step("plan", emit(1)).last_step("work", count_records()))
    instance = start_job(job.id, {}, node_id=unique_node())
    bus.deliver_next()
    [work] = bus.take()
    on_chunk_claimed(work.chunk_id, worker="doomed")  # ... and the worker is killed: nobody renews the lease

    assert run_maintenance_pass().leases_expired == 0, "the lease still runs"
    with later(settings.BATCH_LEASE_SECONDS + 1):
        assert run_maintenance_pass().leases_expired == 1

    chunk = WorkChunk.objects.get(id=work.chunk_id)
    assert (chunk.status, chunk.error_count) == (ChunkStatus.ERRORED, 1)
    assert chunk.error_message == "Worker lost: doomed stopped renewing its lease (attempt 1)"
    assert bus.sent_again == bus.sent, "its retry goes ahead of the node's new work"
    assert [n.chunk_id for n in bus.take()] == [work.chunk_id], "announced again for its retry"
    bus.sent.append(("q", work.to_message()))
    with later(settings.BATCH_RETRY_BACKOFF_SECONDS[0]):  # once its backoff has passed
        bus.drain()
    assert JobInstance.objects.get(id=instance.id).status == JobStatus.COMPLETED


def test_a_chunk_that_kills_every_worker_fails_at_the_retry_limit(define_job, bus, settings):
    # Short leases: the claims are moved only seconds into the past, never behind the database's start, where a
    # lapse is a free retry (a CI run's database may have started a minute before this test).
    settings.BATCH_LEASE_SECONDS = 2
    job = define_job(lambda b: b.first_step("plan", emit(1)).last_step("work", count_records()))
    instance = start_job(job.id, {}, node_id=unique_node())
    bus.deliver_next()
    [work] = bus.take()

    for attempt in range(1, 5):
        with later(max(settings.BATCH_RETRY_BACKOFF_SECONDS)):  # the retry is due
            assert on_chunk_claimed(work.chunk_id) is not None, f"claim {attempt}"
        with later(attempt * (settings.BATCH_LEASE_SECONDS + 1)):
            run_maintenance_pass()
        bus.take()

    chunk = WorkChunk.objects.get(id=work.chunk_id)
    assert (chunk.status, chunk.attempts) == (ChunkStatus.FAILED, 4)
    assert chunk.error_message.startswith("Too many errors: 4. Last error msg was Worker lost")
    assert JobInstance.objects.get(id=instance.id).status == JobStatus.FAILED


def test_a_lost_announcement_is_sent_again_once_the_node_queue_is_drained(define_job, bus, settings):
    node = unique_node()
    job = define_job(lambda b: b.first_step("plan", emit(0)).last_step("work", count_records()))
    instance = start_job(job.id, {}, node_id=node)
    bus.take()  # the announcement is lost (Redis restarted, say)
    broker = redis.Redis.from_url(django_settings.CELERY_BROKER_URL)
    queue = work_notification_queue(node, settings.MODULE_ID)

    assert run_maintenance_pass().reannounced == 0, "too recent to call lost"
    broker.lpush(queue, "someone else's message")
    try:
        with later(settings.BATCH_REANNOUNCE_AFTER_SECONDS + 1):
            assert run_maintenance_pass().reannounced == 0, "the queue is not drained: it may still arrive"
    finally:
        broker.delete(queue)
    with later(settings.BATCH_REANNOUNCE_AFTER_SECONDS + 1):
        assert run_maintenance_pass().reannounced == 1
        assert bus.sent_again == bus.sent
        assert run_maintenance_pass().reannounced == 0, "announced again once per period, not every pass"

    bus.drain()
    assert JobInstance.objects.get(id=instance.id).status == JobStatus.COMPLETED


def test_a_pass_skips_while_another_holds_the_lease_and_runs_once_it_is_given_back():
    other = MaintenanceLease()
    assert other.take()
    assert run_maintenance_pass().ran is False
    other.release()
    assert run_maintenance_pass().ran is True


def test_a_lease_lapses_on_the_database_clock_and_its_late_holder_cannot_renew_it(settings, caplog):
    settings.BATCH_MAINTENANCE_LEASE_SECONDS = 2
    frozen = MaintenanceLease()
    assert frozen.take()
    assert run_maintenance_pass().ran is False
    with connection.cursor() as cursor:  # the database's clock runs on past the lease
        cursor.execute("UPDATE batch_maintenancelease SET expires_at = clock_timestamp() - interval '1 second'")
    assert run_maintenance_pass().ran is True
    assert "let its lease lapse" in caplog.text
    with pytest.raises(LeaseLost):
        frozen.renew()


def sum_n(context, inputs) -> dict:
    return {"total": sum(data["n"] for data in inputs)}


def pass_n_on(context, sink) -> int:
    sink.accept({"n": context.data["n"]})
    return 1


def test_a_reducer_that_died_is_run_again_after_its_lease(define_job, bus, settings):
    job = define_job(
        lambda b: (
            b.gated().first_step("plan", emit(3)).intermediate_step("work", pass_n_on).reduction_step("sum", sum_n)
        )
    )
    instance = start_job(job.id, {}, node_id=unique_node())
    for _ in range(4):
        bus.deliver_next()
    bus.take()
    assert on_reduction_claimed(instance.id) is not None  # ... and its process dies

    with later(settings.BATCH_LEASE_SECONDS + 1):
        assert run_maintenance_pass().reductions_reannounced == 1
        bus.drain()

    instance = JobInstance.objects.get(id=instance.id)  # the reducer's attempts are the engine's, not the snapshot's
    assert (instance.status, instance.report, instance.reducer_attempts) == (JobStatus.COMPLETED, {"total": 3}, 2)


def test_a_reducer_that_keeps_dying_fails_the_job(define_job, bus, settings):
    job = define_job(
        lambda b: (
            b.gated().first_step("plan", emit(1)).intermediate_step("work", pass_n_on).reduction_step("sum", sum_n)
        )
    )
    instance = start_job(job.id, {}, node_id=unique_node())
    for _ in range(2):
        bus.deliver_next()
    bus.take()

    for attempt in range(1, 5):
        with later(attempt * (settings.BATCH_LEASE_SECONDS + 1)):
            assert on_reduction_claimed(instance.id) is not None
    with later(5 * (settings.BATCH_LEASE_SECONDS + 1)):
        run_maintenance_pass()

    instance = get_job(instance.id)
    assert instance.status == JobStatus.FAILED
    assert instance.error_message.startswith("Too many errors: 4")


def test_a_cancel_during_the_reduction_wins_over_its_result(define_job, bus):
    def reduce_then_get_cancelled(context, inputs) -> dict:
        total = sum(data["n"] for data in inputs)
        cancel_job(context.instance_id)
        return {"total": total}

    job = define_job(
        lambda b: (
            b.gated()
            .first_step("plan", emit(2))
            .intermediate_step("work", pass_n_on)
            .reduction_step("sum", reduce_then_get_cancelled)
        )
    )
    instance = start_job(job.id, {}, node_id=unique_node())

    bus.drain()

    instance = get_job(instance.id)
    assert (instance.status, instance.report) == (JobStatus.CANCELLED, None)
    assert instance.error_message == "Job instance cancelled at step sum"


def test_maintenance_completes_a_job_whose_last_worker_died_between_commit_and_check(define_job, bus):
    job = define_job(lambda b: b.first_step("plan", emit(0)).last_step("work", count_records()))
    instance = start_job(job.id, {}, node_id=unique_node())
    WorkChunk.objects.filter(instance_id=instance.id).update(status=ChunkStatus.COMPLETED)
    JobInstance.objects.filter(id=instance.id).update(status=JobStatus.IN_PROGRESS)

    run_maintenance_pass()

    assert JobInstance.objects.get(id=instance.id).status == JobStatus.COMPLETED


def test_a_retry_not_claimed_when_due_is_sent_again_first_even_behind_a_full_queue(define_job, bus, settings):
    node = unique_node()
    job = define_job(lambda b: b.first_step("plan", emit(1)).last_step("work", count_records()))
    start_job(job.id, {}, node_id=node)
    bus.deliver_next()
    [work] = bus.take()
    on_chunk_claimed(work.chunk_id, worker="doomed")
    with later(settings.BATCH_LEASE_SECONDS + 1):
        run_maintenance_pass()  # the lease lapsed: ERRORED, its retry due after the first backoff
    bus.take()  # ...and the worker holding the retry's message for its countdown is killed: the message is gone
    broker = redis.Redis.from_url(django_settings.CELERY_BROKER_URL)
    queue = work_notification_queue(node, settings.MODULE_ID)
    broker.lpush(queue, "a backlog of new work")
    try:
        assert run_maintenance_pass().retries_resent == 0, "not due yet"
        with later(settings.BATCH_RETRY_BACKOFF_SECONDS[0] + settings.BATCH_MAINTENANCE_INTERVAL_SECONDS + 1):
            report = run_maintenance_pass()
    finally:
        broker.delete(queue)

    assert report.retries_resent == 1, "sent again although the node's queue is not drained"
    assert [n.chunk_id for n in bus.take()] == [work.chunk_id]
    assert run_maintenance_pass().retries_resent == 0, "sent again once per interval, not every pass"


def test_a_lease_that_lapsed_across_a_database_restart_is_retried_without_an_error(define_job, bus, settings):
    job = define_job(lambda b: b.first_step("plan", emit(1)).last_step("work", count_records()))
    instance = start_job(job.id, {}, node_id=unique_node())
    bus.deliver_next()
    [work] = bus.take()
    last_retry = settings.BATCH_MAX_CHUNK_RETRIES
    WorkChunk.objects.filter(id=work.chunk_id).update(error_count=last_retry)  # one more error would fail the job
    on_chunk_claimed(work.chunk_id, worker="w")  # it ran and succeeded, and the database crash lost its completion
    with connection.cursor() as cursor:
        cursor.execute("SELECT extract(epoch FROM now() - pg_postmaster_start_time())")
        database_up_for = float(cursor.fetchone()[0])

    with later(database_up_for + settings.BATCH_LEASE_SECONDS + 1):  # last renewed before the database started
        assert run_maintenance_pass().leases_expired == 1

    chunk = WorkChunk.objects.get(id=work.chunk_id)
    assert (chunk.status, chunk.error_count) == (ChunkStatus.ERRORED, last_retry), "a free retry"
    assert bus.sent_again == bus.sent and [n.chunk_id for n in bus.take()] == [work.chunk_id]
    bus.sent.append(("q", work.to_message()))
    bus.drain()  # due at once: no backoff
    assert JobInstance.objects.get(id=instance.id).status == JobStatus.COMPLETED


def test_a_pass_long_after_the_last_one_says_maintenance_was_late(settings, caplog):
    run_maintenance_pass()
    with connection.cursor() as cursor:  # the last pass ended two minutes ago (by the database's clock)
        cursor.execute("UPDATE batch_maintenancepass SET ended_at = now() - interval '120 seconds'")

    assert run_maintenance_pass().ran
    assert "maintenance is late: the last pass ended 120 s ago" in caplog.text
    caplog.clear()
    assert run_maintenance_pass().ran
    assert "maintenance is late" not in caplog.text
