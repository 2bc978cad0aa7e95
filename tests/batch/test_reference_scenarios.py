"""The reference scenarios of `batch2-semantics.md`, one test each, driving the engine functions directly.

Messages go through the `bus` fixture (recorded at commit, delivered when the test says), so each step
of a job's life can be looked at. Real PostgreSQL; the real Redis path is in test_acceptance.py.
"""

from datetime import timedelta

import pytest
from django.utils import timezone

from batch import flow
from batch.control import cancel_job, get_job, start_job
from batch.exceptions import JobFailed, JobStateConflict, RetryChunkLater
from batch.maintenance import run_maintenance_pass
from batch.models import JobInstance, WorkChunk
from batch.progress import describe_duration, refresh_progress
from batch.statuses import CANCELLABLE_JOB_STATUSES, ChunkStatus, JobStatus
from batch.testing import time_passes
from batch.worker import on_chunk_claimed, run_chunk
from tests.batch.factories import JobInstanceFactory, WorkChunkFactory
from tests.batch.helpers import count_records, emit

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.serial]


def chunks_of(instance, step_id=None):
    chunks = WorkChunk.objects.filter(instance_id=instance.id).order_by("create_time", "sequence")
    return chunks.filter(target_step_id=step_id) if step_id else chunks


def status_of(instance) -> str:
    return JobInstance.objects.get(id=instance.id).status


def test_1_start_writes_a_queued_instance_and_one_data_less_chunk_announced_after_commit(define_job, bus):
    job = define_job(lambda b: b.first_step("plan", emit(0)).last_step("work", count_records()))

    instance = start_job(job.id, {})

    assert status_of(instance) == JobStatus.QUEUED
    [chunk] = chunks_of(instance)
    assert (chunk.target_step_id, chunk.data, chunk.sequence) == ("plan", None, 0)
    assert chunk.status == ChunkStatus.QUEUED, "saved READY, queued in the same transaction, then announced"
    [notification] = bus.take()
    assert (notification.chunk_id, notification.instance_id, notification.target_step_id) == (
        chunk.id,
        instance.id,
        "plan",
    )


def test_2a_chunks_emitted_by_a_non_gated_job_are_ready_then_queued_and_announced(define_job, bus):
    job = define_job(lambda b: b.first_step("plan", emit(3)).last_step("work", count_records()))
    instance = start_job(job.id, {})

    bus.deliver_next()

    work = chunks_of(instance, "work")
    assert [chunk.status for chunk in work] == [ChunkStatus.QUEUED] * 3
    assert [chunk.data for chunk in work] == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert {n.chunk_id for n in bus.take()} == {chunk.id for chunk in work}


def test_2b_chunks_emitted_by_a_gated_job_wait_at_the_gate_unannounced(define_job, bus):
    job = define_job(
        lambda b: (
            b.gated()
            .first_step("plan", emit(3))
            .intermediate_step("work", emit(1))
            .last_step("finish", count_records())
        )
    )
    instance = start_job(job.id, {})
    first = bus.take()[0]

    claimed = on_chunk_claimed(first.chunk_id)
    with pytest.MonkeyPatch.context() as patch:  # stop the gate from opening, to look at the waiting chunks
        patch.setattr(flow, "advance_job", lambda instance_id: None)
        run_chunk(job, claimed)

    assert [chunk.status for chunk in chunks_of(instance, "work")] == [ChunkStatus.GATE_WAITING] * 3
    assert bus.take() == []


def test_3_enqueue_moves_only_ready_chunks(bus):
    instance = JobInstanceFactory()
    for status in ChunkStatus:
        WorkChunkFactory(instance=instance, status=status)

    queued = flow.enqueue_ready_chunks(instance)

    assert queued == 1
    statuses = sorted(chunks_of(instance).values_list("status", flat=True))
    assert statuses.count(ChunkStatus.QUEUED) == 2 and ChunkStatus.READY not in statuses
    assert len(bus.take()) == 1


def test_4_claim_moves_the_chunk_and_the_job_to_in_progress(define_job, bus):
    job = define_job(lambda b: b.first_step("plan", emit(0)).last_step("work", count_records()))
    instance = start_job(job.id, {})

    chunk = on_chunk_claimed(bus.take()[0].chunk_id, worker="w1")

    assert chunk is not None
    stored = WorkChunk.objects.get(id=chunk.id)
    assert (stored.status, stored.attempts, stored.worker) == (ChunkStatus.IN_PROGRESS, 1, "w1")
    assert stored.start_time is not None and stored.lease_expires_at > timezone.now()
    assert status_of(instance) == JobStatus.IN_PROGRESS


def test_5_success_completes_the_chunk_clears_its_data_and_stores_its_records(define_job, bus):
    job = define_job(lambda b: b.first_step("plan", emit(1)).last_step("work", count_records(7)))
    instance = start_job(job.id, {})
    bus.deliver_next()

    bus.deliver_next()

    [work] = chunks_of(instance, "work")
    assert (work.status, work.data, work.records_processed) == (ChunkStatus.COMPLETED, None, 7)
    assert work.end_time is not None


def failing(times: int, calls: list, error: Exception = None):
    """A step that raises `times` times, then reports 1 record."""

    def step(context, sink) -> int:
        calls.append(context.chunk_id)
        if len(calls) <= times:
            raise error or RuntimeError(f"boom {len(calls)}")
        return 1

    return step


def test_6_an_error_makes_the_chunk_errored_and_counts_each_one(define_job, bus):
    calls = []
    job = define_job(lambda b: b.first_step("plan", emit(1)).last_step("work", failing(99, calls)))
    instance = start_job(job.id, {})
    bus.deliver_next()

    bus.deliver_next()
    [work] = chunks_of(instance, "work")
    assert (work.status, work.error_count, work.error_message) == (ChunkStatus.ERRORED, 1, "RuntimeError: boom 1")

    bus.deliver_next()  # the errored chunk was announced again for its retry
    work.refresh_from_db()
    assert (work.status, work.error_count) == (ChunkStatus.ERRORED, 2)


def test_7_error_then_success_completes_and_the_error_stays_in_the_sum(define_job, bus):
    calls = []
    job = define_job(lambda b: b.first_step("plan", emit(1)).last_step("work", failing(1, calls)))
    instance = start_job(job.id, {})

    bus.drain()

    [work] = chunks_of(instance, "work")
    assert (work.status, work.error_count) == (ChunkStatus.COMPLETED, 1)
    instance = get_job(instance.id)
    assert (instance.status, instance.error_count) == (JobStatus.COMPLETED, 1)


def test_8_a_step_that_always_throws_runs_four_times_then_fails_chunk_and_job(define_job, bus):
    calls = []
    job = define_job(lambda b: b.first_step("plan", emit(1)).last_step("work", failing(99, calls)))
    instance = start_job(job.id, {})

    bus.drain()

    assert len(calls) == 4
    [work] = chunks_of(instance, "work")
    assert work.status == ChunkStatus.FAILED
    assert work.error_message == "Too many errors: 4. Last error msg was RuntimeError: boom 4"
    instance = get_job(instance.id)
    assert instance.status == JobStatus.FAILED
    assert instance.error_message.startswith("Too many errors: 4")


def test_9_a_fatal_error_fails_chunk_and_job_at_once(define_job, bus):
    calls = []
    job = define_job(
        lambda b: b.first_step("plan", emit(1)).last_step("work", failing(99, calls, JobFailed("the source is gone")))
    )
    instance = start_job(job.id, {})

    bus.drain()

    assert len(calls) == 1
    [work] = chunks_of(instance, "work")
    assert (work.status, work.error_message) == (ChunkStatus.FAILED, "the source is gone")
    instance = get_job(instance.id)
    assert (instance.status, instance.error_message) == (JobStatus.FAILED, "the source is gone")


@pytest.mark.parametrize("status", list(JobStatus))
def test_10_cancel_changes_only_cancellable_jobs(status):
    instance = JobInstanceFactory(status=status, current_gated_step_id="sleep")

    if status in CANCELLABLE_JOB_STATUSES:
        cancelled = cancel_job(instance.id)
        assert (cancelled.status, cancelled.cancelled) == (JobStatus.CANCELLED, True)
        assert cancelled.error_message == "Job instance cancelled at step sleep"
    else:
        with pytest.raises(JobStateConflict, match=f"already ended: it is {status}"):
            cancel_job(instance.id)
        assert status_of(instance) == status


def test_11_retry_later_three_times_then_success_completes(define_job, bus):
    calls = []
    job = define_job(
        lambda b: b.first_step("plan", emit(1)).last_step(
            "work", failing(3, calls, RetryChunkLater(timedelta(seconds=30)))
        )
    )
    instance = start_job(job.id, {})
    bus.drain()

    for poll in range(1, 4):
        [work] = chunks_of(instance, "work")
        assert (work.status, work.poll_attempts, work.error_count) == (ChunkStatus.POLL_WAITING, poll, 0)
        assert run_maintenance_pass().polls_due == 0, "not due yet"
        with time_passes(31):
            assert run_maintenance_pass().polls_due == 1
        bus.drain()

    assert len(calls) == 4
    assert status_of(instance) == JobStatus.COMPLETED


def test_12_gate_holds_until_the_last_chunk_completes_then_releases_the_next_step(define_job, bus):
    job = define_job(
        lambda b: (
            b.gated()
            .first_step("plan", emit(3))
            .intermediate_step("work", emit(1))
            .last_step("finish", count_records())
        )
    )
    instance = start_job(job.id, {})
    bus.deliver_next()  # plan: emits three 'work' chunks, then opens the gate to 'work'
    assert [chunk.status for chunk in chunks_of(instance, "work")] == [ChunkStatus.QUEUED] * 3

    bus.deliver_next()
    bus.deliver_next()
    assert [chunk.status for chunk in chunks_of(instance, "finish")] == [ChunkStatus.GATE_WAITING] * 2
    run_maintenance_pass()
    assert [chunk.status for chunk in chunks_of(instance, "finish")] == [ChunkStatus.GATE_WAITING] * 2, (
        "one 'work' chunk is unfinished: the gate holds, whoever asks"
    )

    bus.deliver_next()  # the worker finishing the last 'work' chunk opens the gate itself

    assert [chunk.status for chunk in chunks_of(instance, "finish")] == [ChunkStatus.QUEUED] * 3
    assert JobInstance.objects.get(id=instance.id).current_gated_step_id == "finish"


def test_13_a_first_step_that_emits_nothing_completes_the_job(define_job, bus):
    job = define_job(lambda b: b.first_step("plan", emit(0)).last_step("work", count_records()))
    instance = start_job(job.id, {})

    bus.drain()

    instance = get_job(instance.id)
    assert (instance.status, instance.progress) == (JobStatus.COMPLETED, 1.0)


def reducer(calls: list, fail: bool = False):
    def reduce(context, inputs) -> dict:
        calls.append(context.instance_id)
        total = sum(data["n"] for data in inputs)
        if fail:
            raise ValueError("cannot sum")
        return {"total": total}

    return reduce


def test_14a_the_reducer_runs_exactly_once_even_when_maintenance_is_forced_repeatedly(define_job, bus):
    calls = []
    job = define_job(
        lambda b: (
            b.gated()
            .first_step("plan", emit(4))
            .intermediate_step("work", pass_n_on)
            .reduction_step("sum", reducer(calls))
        )
    )
    instance = start_job(job.id, {})
    for _ in range(5):
        bus.deliver_next()  # plan, then the four 'work' chunks; the last opens the gate to the reducer
    assert status_of(instance) == JobStatus.FINALIZE
    assert len(bus.sent) == 1, "the reduction is announced"

    with time_passes(5 * 60):  # long enough for maintenance to re-announce
        reannounced = sum(run_maintenance_pass().reductions_reannounced for _ in range(3))
        bus.drain()
        for _ in range(3):
            run_maintenance_pass()
        bus.drain()

    assert reannounced == 3 and len(calls) == 1
    instance = get_job(instance.id)
    assert (instance.status, instance.report) == (JobStatus.COMPLETED, {"total": 0 + 1 + 2 + 3})
    assert [chunk.status for chunk in chunks_of(instance, "sum")] == [ChunkStatus.COMPLETED] * 4


def pass_n_on(context, sink) -> int:
    sink.accept({"n": context.data["n"]})
    return 1


def test_14b_a_reducer_that_throws_fails_the_job(define_job, bus):
    calls = []
    job = define_job(
        lambda b: (
            b.gated()
            .first_step("plan", emit(2))
            .intermediate_step("work", pass_n_on)
            .reduction_step("sum", reducer(calls, fail=True))
        )
    )
    instance = start_job(job.id, {})

    bus.drain()

    instance = get_job(instance.id)
    assert instance.status == JobStatus.FAILED
    assert instance.error_message == "Reduction step sum failed: ValueError: cannot sum"
    assert len(calls) == 1


def test_15_progress_rate_and_eta_from_the_chunks():
    instance = JobInstanceFactory()
    start = timezone.now() - timedelta(hours=1)
    for n, records in enumerate([10, 15, 25]):
        WorkChunkFactory(
            instance=instance,
            status=ChunkStatus.COMPLETED,
            records_processed=records,
            start_time=start + timedelta(seconds=n),
            end_time=start + timedelta(seconds=600),
        )
    for _ in range(3):
        WorkChunkFactory(instance=instance, status=ChunkStatus.QUEUED)

    figures = refresh_progress(instance.id)

    assert figures.progress == 0.5
    assert figures.combined_records_processed == 50
    assert round(figures.records_per_second, 4) == 0.0833
    assert figures.estimated_seconds_remaining == 600
    assert describe_duration(figures.estimated_seconds_remaining) == "10 minutes"
    instance = get_job(instance.id)
    assert (instance.progress, instance.combined_records_processed) == (0.5, 50)


def test_16_all_done_completes_with_progress_one_purged_data_and_one_completion_call(define_job, bus):
    completions = []
    job = define_job(
        lambda b: b.first_step("plan", emit(6)).last_step("work", count_records(2)).on_completion(completions.append)
    )
    instance = start_job(job.id, {})

    bus.drain()
    run_maintenance_pass()

    instance = get_job(instance.id)
    assert (instance.status, instance.progress, instance.combined_records_processed) == (JobStatus.COMPLETED, 1.0, 12)
    assert not chunks_of(instance).filter(data__isnull=False).exists()
    assert [(c.instance_id, c.combined_records_processed) for c in completions] == [(instance.id, 12)]


def test_17a_one_failed_chunk_fails_the_job_at_five_of_six(define_job, bus):
    job = define_job(lambda b: b.first_step("plan", emit(0)).last_step("work", failing(99, [], JobFailed("bad row"))))
    instance = JobInstanceFactory(definition_id=job.id, status=JobStatus.IN_PROGRESS)
    WorkChunkFactory.create_batch(
        5, instance=instance, target_step_id="work", status=ChunkStatus.COMPLETED, records_processed=1
    )
    last = WorkChunkFactory(instance=instance, target_step_id="work", status=ChunkStatus.QUEUED)

    run_chunk(job, on_chunk_claimed(last.id))
    figures = refresh_progress(instance.id)

    instance = get_job(instance.id)
    assert (instance.status, instance.error_message) == (JobStatus.FAILED, "bad row")
    assert figures.progress == pytest.approx(5 / 6)
    assert WorkChunk.objects.get(id=last.id).status == ChunkStatus.FAILED


def test_17b_a_job_that_ended_more_than_seven_days_ago_is_deleted_by_maintenance():
    old = JobInstanceFactory(status=JobStatus.FAILED, end_time=timezone.now() - timedelta(days=7, minutes=1))
    WorkChunkFactory.create_batch(3, instance=old, status=ChunkStatus.COMPLETED)
    recent = JobInstanceFactory(status=JobStatus.FAILED, end_time=timezone.now() - timedelta(days=6))

    report = run_maintenance_pass()

    assert report.purged_instances == 1
    assert not JobInstance.objects.filter(id=old.id).exists()
    assert not WorkChunk.objects.filter(instance_id=old.id).exists()
    assert JobInstance.objects.filter(id=recent.id).exists()
