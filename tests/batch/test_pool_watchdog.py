"""The worker's pool watchdog, in one process: a claim's maximum run time counts from its last recorded
progress, so a step that streams slowly but steadily is not killed as hung (issue #29, low: chunk deadline)."""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import timedelta

import pytest

from batch.control import start_job
from batch.leases import chunk_lease
from batch.models import WorkChunk
from batch.recycling import PoolWatchdog
from batch.statuses import ChunkStatus
from batch.worker import on_chunk_claimed

pytestmark = pytest.mark.django_db(transaction=True)

HOST = "watched-host"
NOT_A_CHILD = 1  # init: recorded as an overrun, never killed


def emit_two(context, sink) -> int:
    sink.accept({"n": 1})
    sink.accept({"n": 2})
    return 0


def test_a_claim_past_its_maximum_is_recycled_unless_its_step_reported_progress_since(bus, define_job):
    definition = define_job(
        lambda b: b.max_chunk_seconds(1).first_step("emit", emit_two).last_step("work", lambda context, sink: 1)
    )
    job = start_job(definition.id, {})
    bus.deliver_next()
    silent, progressing = (
        on_chunk_claimed(chunk.id, worker=f"{HOST}/{NOT_A_CHILD}")
        for chunk in WorkChunk.objects.filter(instance_id=job.id, target_step_id="work").order_by("sequence")
    )
    lease = chunk_lease(progressing.id, progressing.claim_token, max_seconds=1)
    lease.report_progress()
    assert lease.renew()  # the renewal records the progress, on the database's clock
    watchdog = PoolWatchdog(HOST, os.getpid())
    assert watchdog.check_once() == []  # both first seen now, within their maximum

    # As if both claims had been seen a minute ago: far past the maximum and the grace.
    watchdog._first_seen = {
        key: replace(held, deadline=held.deadline - timedelta(minutes=1)) for key, held in watchdog._first_seen.items()
    }
    recycled = watchdog.check_once()

    assert [held.chunk_id for held in recycled] == [silent.id]
    statuses = dict(WorkChunk.objects.filter(id__in=[silent.id, progressing.id]).values_list("id", "status"))
    assert statuses == {silent.id: ChunkStatus.ERRORED, progressing.id: ChunkStatus.IN_PROGRESS}
