"""The public control surface: jobs come back as frozen snapshots with per-step progress, a client's
lookups are scoped to its own jobs, and lists page lazily."""

import dataclasses
import io

import pytest

from batch import control
from batch.control import JobNotFound, JobStateConflict, JobStatus
from tests.batch.helpers import count_records, emit

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def three_step_job(define_job):
    return define_job(
        lambda b: (
            b.gated()
            .first_step("emit", emit(3))
            .intermediate_step("double", emit(2))
            .last_step("count", count_records())
        )
    )


def test_a_started_job_is_a_frozen_snapshot_in_its_first_step(bus, three_step_job):
    job = control.start_job(three_step_job.id, started_by="alice")

    assert (job.status, job.started_by, job.ended) == (JobStatus.QUEUED, "alice", False)
    assert [step.step_id for step in job.steps] == ["emit", "double", "count"]
    assert (job.current_step, job.current_step_number, job.step_count) == ("emit", 1, 3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        job.status = JobStatus.COMPLETED  # type: ignore[misc]


def test_per_step_progress_counts_chunks_done_of_all(bus, three_step_job):
    job = control.start_job(three_step_job.id)
    bus.deliver_next()  # emit: 3 chunks for "double"
    bus.deliver_next()  # the first "double" chunk

    snapshot = control.get_job(job.id)
    assert (snapshot.step("emit").done, snapshot.step("emit").total) == (1, 1)
    assert (snapshot.step("double").done, snapshot.step("double").total) == (1, 3)
    assert (snapshot.current_step, snapshot.current_step_number) == ("double", 2)

    bus.drain()
    ended = control.get_job(job.id)
    assert (ended.status, ended.current_step, ended.combined_records_processed) == (JobStatus.COMPLETED, None, 6)
    assert (ended.completed_chunks, ended.chunk_count) == (1 + 3 + 6, 1 + 3 + 6)


def test_a_client_scoped_lookup_cannot_see_or_touch_another_users_job(bus, three_step_job):
    job = control.start_job(three_step_job.id, started_by="alice")

    for action in (control.get_job, control.cancel_job, control.restart_job):
        with pytest.raises(JobNotFound):
            action(job.id, started_by="bob")
    assert control.get_job(job.id, started_by="alice").status == JobStatus.QUEUED
    assert control.cancel_job(job.id, started_by="alice").status == JobStatus.CANCELLED


def test_cancel_then_restart_resumes_and_completes(bus, three_step_job):
    job = control.start_job(three_step_job.id)
    bus.deliver_next()
    control.cancel_job(job.id)
    with pytest.raises(JobStateConflict):
        control.cancel_job(job.id)

    assert control.restart_job(job.id).status == JobStatus.IN_PROGRESS
    bus.drain()
    assert control.get_job(job.id).status == JobStatus.COMPLETED


def test_lists_are_newest_first_filtered_and_sliced_lazily(bus, three_step_job, django_assert_max_num_queries):
    first = control.start_job(three_step_job.id, started_by="alice")
    second = control.start_job(three_step_job.id, started_by="bob")
    third = control.start_job(three_step_job.id, started_by="alice")

    jobs = control.list_jobs()
    assert len(jobs) == 3
    with django_assert_max_num_queries(2):
        assert [job.id for job in jobs[0:3]] == [third.id, second.id, first.id]
    assert [job.id for job in control.list_jobs(started_by="alice")[:10]] == [third.id, first.id]
    assert control.list_jobs([JobStatus.COMPLETED]).count() == 0
    assert control.list_jobs(definition_ids=["NOPE"]).count() == 0


def test_job_id_sets_are_subqueries_for_other_apps_tables(bus, three_step_job):
    running = control.start_job(three_step_job.id)
    ended = control.start_job(three_step_job.id)
    control.cancel_job(ended.id)

    assert {row["id"] for row in control.unfinished_job_ids()} == {running.id}
    assert {row["id"] for row in control.job_ids()} == {running.id, ended.id}


def test_follow_job_draws_until_the_end_and_returns_the_ended_job(bus, three_step_job):
    job = control.start_job(three_step_job.id)
    bus.drain()
    out = io.StringIO()

    assert control.follow_job(job.id, out).status == JobStatus.COMPLETED
    assert "10/10 chunks" in out.getvalue()
