"""Leases, in one process: a step or reduction past its maximum run time is retried; a cancelled job's lease lapses."""

from __future__ import annotations

import time

import pytest

from batch.control import cancel_job, get_job, start_job
from batch.leases import chunk_lease
from batch.maintenance import run_maintenance_pass
from batch.models import JobInstance, WorkChunk
from batch.statuses import ChunkStatus, JobStatus
from batch.worker import on_chunk_claimed

# The lease keeper renews and records overruns on its own thread (and connection): commits must be real.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.serial]


def emit_one(context, sink) -> int:
    sink.accept({"n": 1})
    return 0


def hang_on_first_attempt(context, sink) -> int:
    """Hangs (only noticing a lost lease, as a cancel) on the first attempt; succeeds on the retry."""
    if context.attempt == 1:
        deadline = time.monotonic() + 30
        while not context.is_cancelled():
            assert time.monotonic() < deadline, "the overrun was never noticed"
            time.sleep(0.05)
        context.check_cancelled()
    return 1


def test_a_chunk_running_past_the_jobs_maximum_is_errored_with_the_reason_and_its_retry_completes(bus, define_job):
    definition = define_job(
        lambda b: b.max_chunk_seconds(1).first_step("emit", emit_one).last_step("work", hang_on_first_attempt)
    )
    job = start_job(definition.id, {})

    bus.drain()

    chunk = WorkChunk.objects.get(instance_id=job.id, target_step_id="work")
    assert (chunk.status, chunk.attempts, chunk.error_count) == (ChunkStatus.COMPLETED, 2, 1)
    assert "ran longer than its maximum of 1 s (BATCH_MAX_CHUNK_SECONDS)" in chunk.error_message
    assert get_job(job.id).status == JobStatus.COMPLETED


def progress_past_the_maximum(context, sink) -> int:
    """Runs 2.5 s, past the job's maximum of 1 s, reporting progress every 50 ms (as a slow, steady stream)."""
    until = time.monotonic() + 2.5
    while time.monotonic() < until:
        context.report_progress()
        context.check_cancelled()
        time.sleep(0.05)
    return 1


def test_a_chunk_reporting_progress_runs_past_the_jobs_maximum_and_its_progress_is_recorded(bus, define_job):
    definition = define_job(
        lambda b: b.max_chunk_seconds(1).first_step("emit", emit_one).last_step("work", progress_past_the_maximum)
    )
    job = start_job(definition.id, {})

    bus.drain()

    chunk = WorkChunk.objects.get(instance_id=job.id, target_step_id="work")
    assert (chunk.status, chunk.attempts, chunk.error_count, chunk.error_message) == (ChunkStatus.COMPLETED, 1, 0, None)
    assert chunk.progress_at is not None  # what the worker's watchdog reads (batch.recycling)
    assert get_job(job.id).status == JobStatus.COMPLETED


def count_after_hanging_on_first_attempt(context, inputs) -> dict:
    hang_on_first_attempt(context, None)
    return {"inputs": sum(1 for _ in inputs)}


def test_a_reduction_running_past_the_jobs_maximum_lapses_and_maintenance_starts_one_that_completes(bus, define_job):
    definition = define_job(
        lambda b: (
            b.gated()
            .max_chunk_seconds(3)  # the retry's reads of its inputs fit in it on a loaded machine
            .first_step("emit", emit_one)
            .reduction_step("count", count_after_hanging_on_first_attempt)
        )
    )
    job = start_job(definition.id, {})

    bus.drain()  # the reduction's first attempt hangs until its lease is taken from it
    assert get_job(job.id).status == JobStatus.FINALIZE
    assert "reduction ran longer than its maximum of 3 s" in JobInstance.objects.get(id=job.id).error_message
    run_maintenance_pass()
    bus.drain()

    finished = get_job(job.id)
    assert (finished.status, finished.report) == (JobStatus.COMPLETED, {"inputs": 1})
    assert JobInstance.objects.get(id=job.id).reducer_attempts == 2


def test_the_lease_of_a_chunk_whose_job_was_cancelled_is_not_renewed(bus, define_job):
    definition = define_job(lambda b: b.first_step("emit", emit_one).last_step("work", lambda c, s: 1))
    job = start_job(definition.id, {})
    bus.deliver_next()  # the first step: emits the chunk
    chunk = on_chunk_claimed(WorkChunk.objects.get(instance_id=job.id, target_step_id="work").id)
    lease = chunk_lease(chunk.id, chunk.claim_token)
    assert lease.renew()

    cancel_job(job.id)

    assert not lease.renew()
