"""The worker: claims are exclusive, duplicates and late messages change nothing, a lost claim cannot write,
re-run steps do not duplicate their output, leases are renewed, cancels stop steps, caps hold."""

import threading
import uuid
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from batch import flow, step_context
from batch.api import JobDefinitionBuilder
from batch.control import cancel_job, get_job, start_job
from batch.dispatch import on_work_notification
from batch.exceptions import BatchError, UnknownJobDefinition
from batch.maintenance import run_maintenance_pass
from batch.models import JobInstance, WorkChunk
from batch.notifications import WorkNotification
from batch.registry import registry
from batch.sink import SINK_FLUSH_BYTES
from batch.statuses import ChunkStatus, JobStatus
from batch.worker import ChunkRun, Claim, NextChunk, on_chunk_claimed, run_chunk
from tests.batch.helpers import count_records, emit
from tests.processes import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def recording(calls: list, records: int = 1):
    def step(context, sink) -> int:
        calls.append(context.data)
        return records

    return step


def test_the_same_message_delivered_twice_runs_the_step_once(define_job, bus):
    calls = []
    job = define_job(lambda b: b.first_step("plan", emit(1)).last_step("work", recording(calls)))
    start_job(job.id, {})
    bus.deliver_next()
    [work] = bus.take()

    on_work_notification(work)
    on_work_notification(work)

    assert calls == [{"n": 0}]
    assert WorkChunk.objects.get(id=work.chunk_id).attempts == 1


def test_a_chunk_locked_by_another_claim_is_skipped_not_waited_for(define_job, bus):
    job = define_job(lambda b: b.first_step("plan", emit(0)).last_step("work", count_records()))
    start_job(job.id, {})
    [first] = bus.take()
    locked, release = threading.Event(), threading.Event()

    def hold_the_row_lock():
        with transaction.atomic():
            WorkChunk.objects.select_for_update().get(id=first.chunk_id)
            locked.set()
            release.wait(120)
        connection.close()

    holder = threading.Thread(target=hold_the_row_lock)
    holder.start()
    assert locked.wait(60)

    claimed = on_chunk_claimed(first.chunk_id)  # had it waited for the lock, it would have got the chunk

    release.set()
    holder.join()
    assert claimed is None
    assert on_chunk_claimed(first.chunk_id) is not None, "once the lock is gone the chunk is claimable"


def test_an_unknown_definition_fails_loudly_and_an_unknown_chunk_is_dropped(define_job, bus):
    job = define_job(lambda b: b.first_step("plan", emit(0)).last_step("work", count_records()))
    instance = start_job(job.id, {})
    [first] = bus.take()

    with pytest.raises(UnknownJobDefinition):
        on_work_notification(WorkNotification(instance.id, "NO_SUCH_JOB", 1, "plan", first.chunk_id))
    on_work_notification(WorkNotification(instance.id, job.id, 1, "plan", uuid.uuid4()))

    assert WorkChunk.objects.get(id=first.chunk_id).status == ChunkStatus.QUEUED


def test_a_cancelled_job_has_nothing_to_claim(define_job, bus):
    calls = []
    job = define_job(lambda b: b.first_step("plan", emit(0)).last_step("work", recording(calls)))
    instance = start_job(job.id, {})
    cancel_job(instance.id)

    bus.drain()

    assert WorkChunk.objects.get(instance_id=instance.id).status == ChunkStatus.QUEUED
    assert JobInstance.objects.get(id=instance.id).status == JobStatus.CANCELLED


def test_a_worker_that_lost_its_claim_cannot_write_its_result(define_job, bus):
    calls = []
    job = define_job(lambda b: b.first_step("plan", emit(1)).last_step("work", recording(calls, records=5)))
    start_job(job.id, {})
    bus.deliver_next()
    [work] = bus.take()
    stale = on_chunk_claimed(work.chunk_id, worker="slow")
    WorkChunk.objects.filter(id=work.chunk_id).update(status=ChunkStatus.ERRORED)  # as maintenance does
    fresh = on_chunk_claimed(work.chunk_id, worker="fast")

    run_chunk(job, stale)
    chunk = WorkChunk.objects.get(id=work.chunk_id)
    assert (chunk.status, chunk.worker) == (ChunkStatus.IN_PROGRESS, "fast"), "the stale result was discarded"

    run_chunk(job, fresh)
    chunk.refresh_from_db()
    assert (chunk.status, chunk.attempts, chunk.records_processed) == (ChunkStatus.COMPLETED, 2, 5)


def test_a_step_run_again_re_emits_the_same_chunks_instead_of_new_ones(define_job, bus):
    attempts = []

    def plan(context, sink) -> int:
        attempts.append(1)
        for n in range(3):
            sink.accept({"n": n})
        if len(attempts) == 1:
            raise RuntimeError("crashed after emitting")
        return 0

    job = define_job(lambda b: b.gated().first_step("plan", plan).last_step("work", count_records()))
    instance = start_job(job.id, {})

    bus.drain()

    assert len(attempts) == 2
    work = WorkChunk.objects.filter(instance_id=instance.id, target_step_id="work")
    assert sorted(work.values_list("sequence", flat=True)) == [0, 1, 2]
    assert JobInstance.objects.get(id=instance.id).combined_records_processed == 3


def test_a_capped_job_never_has_more_chunks_in_flight_than_its_cap(define_job, bus):
    in_flight = []

    def work(context, sink) -> int:
        in_flight.append(
            WorkChunk.objects.filter(
                instance_id=context.instance_id, status__in=[ChunkStatus.QUEUED, ChunkStatus.IN_PROGRESS]
            ).count()
        )
        return 1

    job = define_job(lambda b: b.first_step("plan", emit(7)).last_step("work", work).max_concurrent_chunks(2))
    instance = start_job(job.id, {})
    bus.deliver_next()
    assert len(bus.sent) == 2, "only two of the seven chunks are announced"
    assert WorkChunk.objects.filter(instance_id=instance.id, status=ChunkStatus.READY).count() == 5

    bus.drain()

    assert len(in_flight) == 7 and max(in_flight) <= 2
    assert JobInstance.objects.get(id=instance.id).status == JobStatus.COMPLETED


def test_the_lease_is_renewed_while_a_long_step_runs(define_job, bus, settings):
    settings.BATCH_LEASE_SECONDS = 6  # renewed every 2 s: a renewal thread starved for a few seconds still keeps it
    seen = {}

    def slow(context, sink) -> int:
        chunk = WorkChunk.objects.filter(id=context.chunk_id)
        claimed_until = chunk.get().lease_expires_at
        # Outlive the first lease: wait (as long as a loaded machine needs) until renewals have pushed it on.
        seen["renewed_until"] = wait_until(
            lambda: (until := chunk.get().lease_expires_at) > claimed_until + timedelta(seconds=3) and until,
            timeout=120,
        )
        seen["maintenance"] = run_maintenance_pass()
        seen["claimed_until"] = claimed_until
        return 1

    job = define_job(lambda b: b.first_step("plan", emit(1)).last_step("work", slow))
    instance = start_job(job.id, {})

    bus.drain()

    assert seen["renewed_until"] > seen["claimed_until"] + timedelta(seconds=3)
    assert seen["maintenance"].leases_expired == 0
    chunk = WorkChunk.objects.get(instance_id=instance.id, target_step_id="work")
    assert (chunk.status, chunk.error_count) == (ChunkStatus.COMPLETED, 0)


def test_a_cancel_stops_a_running_step_within_one_check_interval_and_releases_its_chunk(define_job, bus, monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(step_context, "time", clock)  # the step context's clock only: the test moves it
    observed = {}

    def long_step(context, sink) -> int:
        assert not context.is_cancelled()
        cancel_job(context.instance_id)  # as if an operator pressed cancel now
        cancelled_at = clock.monotonic()
        for _ in range(100):
            if context.is_cancelled():
                observed["after"] = clock.monotonic() - cancelled_at
                context.check_cancelled()
            clock.advance(0.25)  # exact in binary: four steps make one check interval
        return 1

    job = define_job(lambda b: b.first_step("plan", emit(1)).last_step("work", long_step))
    instance = start_job(job.id, {})

    bus.drain()

    assert 0 < observed["after"] <= step_context.CANCEL_CHECK_SECONDS, "noticed at the next check, not sooner"
    chunk = WorkChunk.objects.get(instance_id=instance.id, target_step_id="work")
    assert (chunk.status, chunk.error_count) == (ChunkStatus.READY, 0)
    assert JobInstance.objects.get(id=instance.id).status == JobStatus.CANCELLED


class FakeClock:
    """Stands in for the `time` module of `batch.step_context`: it moves only when the test says."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_emitting_into_a_cancelled_job_raises_and_stops_the_step(define_job, bus, monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(step_context, "time", clock)
    emitted = []

    def plan(context, sink) -> int:
        cancel_job(context.instance_id)
        clock.advance(step_context.CANCEL_CHECK_SECONDS)  # the next emit is due to check
        for n in range(1000):
            sink.accept({"n": n})
            emitted.append(n)
        return 0

    job = define_job(lambda b: b.first_step("plan", plan).last_step("work", count_records()))
    instance = start_job(job.id, {})

    bus.drain()

    assert emitted == []
    assert WorkChunk.objects.get(instance_id=instance.id).status == ChunkStatus.READY


def test_the_last_step_cannot_emit(define_job, bus):
    def work(context, sink) -> int:
        sink.accept({"more": True})
        return 1

    job = define_job(lambda b: b.first_step("plan", emit(1)).last_step("work", work))
    instance = start_job(job.id, {})
    bus.deliver_next()

    bus.deliver_next()

    chunk = WorkChunk.objects.get(instance_id=instance.id, target_step_id="work")
    assert chunk.status == ChunkStatus.ERRORED
    assert BatchError.__name__ in chunk.error_message and "cannot emit chunks" in chunk.error_message


def test_warnings_are_kept_on_the_chunk_and_joined_into_the_job(define_job, bus):
    def work(context, sink) -> int:
        context.add_warning(f"row {context.data['n']} skipped")
        return 1

    job = define_job(lambda b: b.first_step("plan", emit(2)).last_step("work", work))
    instance = start_job(job.id, {})

    bus.drain()

    instance = get_job(instance.id)
    assert instance.warning_messages == "row 0 skipped\nrow 1 skipped"
    assert instance.status == JobStatus.COMPLETED


def test_a_running_instance_keeps_its_version_when_a_newer_one_is_registered(define_job, bus):
    calls = []
    old = define_job(lambda b: b.first_step("plan", emit(1)).last_step("work", recording(calls, records=1)))
    instance = start_job(old.id, {})
    newer = JobDefinitionBuilder(old.id, 2).first_step("plan", emit(1)).last_step("work", lambda c, s: 100).build()
    registry.register(newer)
    try:
        bus.drain()
        assert start_job(old.id, {}).definition_version == 2
    finally:
        registry.unregister(old.id, 2)

    instance = get_job(instance.id)
    assert (instance.definition_version, instance.combined_records_processed) == (1, 1)
    assert timezone.now() >= instance.end_time


def test_large_emitted_chunks_are_written_as_the_step_goes_so_its_memory_stays_flat(define_job, bus):
    stored_while_emitting = []
    big = "x" * (SINK_FLUSH_BYTES // 4)

    def plan(context, sink) -> int:
        for n in range(9):
            sink.accept({"n": n, "payload": big})
            stored_while_emitting.append(
                WorkChunk.objects.filter(instance_id=context.instance_id, target_step_id="work").count()
            )
        return 0

    job = define_job(lambda b: b.gated().first_step("plan", plan).last_step("work", count_records()))
    instance = start_job(job.id, {})

    bus.drain()

    assert stored_while_emitting == [0, 0, 0, 4, 4, 4, 4, 8, 8], "written every 4 MiB, long before 500 chunks"
    assert WorkChunk.objects.filter(instance_id=instance.id, target_step_id="work").count() == 9
    assert JobInstance.objects.get(id=instance.id).status == JobStatus.COMPLETED


def test_a_large_announcement_shares_messages_and_a_redelivered_one_runs_only_what_is_left(define_job, bus):
    calls = []
    job = define_job(lambda b: b.first_step("plan", emit(640)).last_step("work", recording(calls)))
    instance = start_job(job.id, {})
    bus.deliver_next()
    messages = bus.take()
    assert len(messages) < 640 and len(messages) >= flow.MESSAGES_PER_ANNOUNCEMENT
    assert 1 < max(len(m.chunk_ids) for m in messages) <= flow.CHUNKS_PER_MESSAGE
    assert len({chunk_id for m in messages for chunk_id in m.chunk_ids}) == 640
    first = messages[0]
    on_chunk_claimed(first.chunk_ids[1], worker="done before the worker was lost")  # ...and completed below
    WorkChunk.objects.filter(id=first.chunk_ids[1]).update(status=ChunkStatus.COMPLETED)

    on_work_notification(first)  # redelivered after its worker was lost midway

    assert len(calls) == len(first.chunk_ids) - 1, "a chunk already done is not run again"
    for message in messages[1:]:
        on_work_notification(message)
    assert len(calls) == 639
    assert JobInstance.objects.get(id=instance.id).status == JobStatus.COMPLETED


def test_a_capped_job_announces_one_chunk_per_message(define_job, bus):
    job = define_job(
        lambda b: b.first_step("plan", emit(640)).last_step("work", count_records()).max_concurrent_chunks(200)
    )
    start_job(job.id, {})
    bus.deliver_next()
    assert all(len(m.chunk_ids) == 1 for m in bus.take())


def test_a_completion_claims_the_next_chunk_of_its_message_in_the_same_statement(define_job, bus):
    job = define_job(lambda b: b.first_step("plan", emit(2)).last_step("work", count_records()))
    instance = start_job(job.id, {})
    bus.deliver_next()
    first, second = [message.chunk_id for message in bus.take()]

    claim = run_chunk(job, on_chunk_claimed(first, worker="w"), NextChunk(second, worker="w", task_id="t")).next_claim

    assert WorkChunk.objects.get(id=first).status == ChunkStatus.COMPLETED
    claimed = WorkChunk.objects.get(id=second)
    assert (claimed.status, claimed.worker, claimed.task_id, claimed.attempts) == (ChunkStatus.IN_PROGRESS, "w", "t", 1)
    assert (claim.chunk.id, claim.chunk.claim_token) == (second, claimed.claim_token)
    assert run_chunk(job, claim.chunk, NextChunk(second)) == ChunkRun(next_claim=Claim(None)), (
        "a chunk already claimed is not claimed again"
    )
    assert JobInstance.objects.get(id=instance.id).status == JobStatus.COMPLETED


def test_a_failed_step_claims_nothing_and_leaves_the_next_chunk_to_its_own_claim(define_job, bus):
    def broken(context, sink) -> int:
        raise RuntimeError("broken")

    job = define_job(lambda b: b.first_step("plan", emit(2)).last_step("work", broken))
    start_job(job.id, {})
    bus.deliver_next()
    first, second = [message.chunk_id for message in bus.take()]

    assert run_chunk(job, on_chunk_claimed(first), NextChunk(second)) == ChunkRun(error="RuntimeError: broken")
    assert WorkChunk.objects.get(id=first).status == ChunkStatus.ERRORED
    assert WorkChunk.objects.get(id=second).status == ChunkStatus.QUEUED


def test_a_chunk_claimed_long_after_its_announcement_is_logged_once_a_minute(define_job, bus, caplog, monkeypatch):
    job = define_job(lambda b: b.first_step("plan", emit(3)).last_step("work", count_records()))
    start_job(job.id, {})
    bus.deliver_next()
    fresh, late, later = bus.take()
    WorkChunk.objects.filter(id__in=[late.chunk_id, later.chunk_id]).update(
        announced_at=timezone.now() - timedelta(hours=1)
    )
    monkeypatch.setattr("batch.worker._last_late_claim_log", 0.0)

    with caplog.at_level("WARNING", logger="batch.worker"):
        on_chunk_claimed(fresh.chunk_id)
        assert "claimed" not in caplog.text  # announced just now
        on_chunk_claimed(late.chunk_id)
        on_chunk_claimed(later.chunk_id)

    assert caplog.text.count("after it was announced") == 1
    assert str(late.chunk_id) in caplog.text
