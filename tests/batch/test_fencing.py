"""Outcomes are fenced by each claim's random token, not by its attempt number, which can repeat."""

from __future__ import annotations

import pytest
from django.db.models import F

from batch.control import start_job
from batch.models import WorkChunk
from batch.sink import SINK_FLUSH_SIZE, ChunkSink
from batch.statuses import ChunkStatus
from batch.worker import on_chunk_claimed, on_chunk_completed, run_chunk
from tests.batch.helpers import count_records, emit

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_claim_lost_in_a_database_crash_cannot_record_over_the_claim_that_replaced_it(bus, define_job):
    definition = define_job(lambda b: b.first_step("plan", emit(1)).last_step("work", count_records()))
    job = start_job(definition.id, {})
    bus.deliver_next()
    chunk_id = WorkChunk.objects.get(instance_id=job.id, target_step_id="work").id
    lost = on_chunk_claimed(chunk_id, worker="zombie")
    # PostgreSQL crashed before the claim's asynchronous commit reached the disk: the row is as before it.
    WorkChunk.objects.filter(id=chunk_id).update(status=ChunkStatus.QUEUED, attempts=F("attempts") - 1)
    current = on_chunk_claimed(chunk_id, worker="survivor")
    assert current.attempts == lost.attempts  # the attempt number repeats; the token does not

    step = definition.step("work")
    on_chunk_completed(lost, definition, ChunkSink(definition, lost.job, lost, step, None), 99, [])

    row = WorkChunk.objects.get(id=chunk_id)
    assert (row.status, row.worker, row.records_processed) == (ChunkStatus.IN_PROGRESS, "survivor", None)


def test_a_zombie_past_its_lease_cannot_write_or_announce_the_chunks_it_emits(bus, define_job):
    emitted = SINK_FLUSH_SIZE + 100  # one batch written mid-step, the rest with the completion
    definition = define_job(lambda b: b.first_step("plan", emit(emitted)).last_step("work", count_records()))
    job = start_job(definition.id, {})
    [plan] = bus.take()
    zombie = on_chunk_claimed(plan.chunk_id, worker="zombie")
    # Its lease lapsed (maintenance errored the chunk) and another worker claimed it while the zombie ran on.
    WorkChunk.objects.filter(id=plan.chunk_id).update(status=ChunkStatus.ERRORED)
    on_chunk_claimed(plan.chunk_id, worker="survivor")

    run = run_chunk(definition, zombie)

    assert not WorkChunk.objects.filter(instance_id=job.id, target_step_id="work").exists()
    assert bus.take() == []  # nothing announced either
    assert run.error is None
    row = WorkChunk.objects.get(id=plan.chunk_id)
    assert (row.status, row.worker, row.error_count) == (ChunkStatus.IN_PROGRESS, "survivor", 0)
