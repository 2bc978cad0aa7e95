"""The transition tables are the law: every (from, to) pair is tried, and only the listed ones move."""

import pytest
from django.db.models import Q

from batch.models import WorkChunk
from batch.statuses import CHUNK_TRANSITIONS, JOB_TRANSITIONS, ChunkStatus, JobStatus
from batch.transitions import change_chunk_status, change_chunks_status, change_job_status
from tests.batch.factories import JobInstanceFactory, WorkChunkFactory

pytestmark = pytest.mark.django_db


def test_every_chunk_transition_is_allowed_or_refused_as_the_table_says():
    instance = JobInstanceFactory()
    pairs = [(source, target) for source in ChunkStatus for target in ChunkStatus]
    chunks = {pair: WorkChunkFactory(instance=instance, status=pair[0]) for pair in pairs}

    for (source, target), chunk in chunks.items():
        moved = change_chunk_status(chunk.id, target)

        assert moved == (target in CHUNK_TRANSITIONS[source]), f"{source} -> {target}"
        chunk.refresh_from_db()
        assert chunk.status == (target if moved else source)


def test_every_job_transition_is_allowed_or_refused_as_the_table_says():
    for source in JobStatus:
        for target in JobStatus:
            instance = JobInstanceFactory(status=source)

            moved = change_job_status(instance.id, target)

            assert moved == (target in JOB_TRANSITIONS[source]), f"{source} -> {target}"
            instance.refresh_from_db()
            assert instance.status == (target if moved else source)


def test_the_tables_name_every_status_and_end_in_completed():
    assert set(CHUNK_TRANSITIONS) == set(ChunkStatus)
    assert set(JOB_TRANSITIONS) == set(JobStatus)
    assert CHUNK_TRANSITIONS[ChunkStatus.COMPLETED] == frozenset()
    assert JOB_TRANSITIONS[JobStatus.COMPLETED] == frozenset()


def test_a_condition_narrows_the_move_and_a_lost_race_changes_nothing():
    chunk = WorkChunkFactory(status=ChunkStatus.QUEUED, attempts=1)

    assert not change_chunk_status(chunk.id, ChunkStatus.IN_PROGRESS, only_if=Q(attempts=7))
    assert change_chunk_status(chunk.id, ChunkStatus.IN_PROGRESS)
    assert not change_chunk_status(chunk.id, ChunkStatus.QUEUED), "the second mover loses"


def test_bulk_moves_only_allowed_rows_up_to_the_limit():
    instance = JobInstanceFactory()
    ready = [WorkChunkFactory(instance=instance, status=ChunkStatus.READY) for _ in range(3)]
    WorkChunkFactory(instance=instance, status=ChunkStatus.COMPLETED)

    moved = change_chunks_status(Q(instance_id=instance.id), ChunkStatus.QUEUED, limit=2)

    assert len(moved) == 2
    assert {chunk_id for chunk_id, _ in moved} <= {chunk.id for chunk in ready}
    statuses = sorted(WorkChunk.objects.filter(instance=instance).values_list("status", flat=True))
    assert statuses == ["COMPLETED", "QUEUED", "QUEUED", "READY"]
