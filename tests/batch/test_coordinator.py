"""Starting, cancelling and restarting jobs (batch.control): start validates before writing, cancel and restart
obey the job's status, and a restart resumes where the job stopped."""

import pytest

from batch.control import cancel_job, get_job, list_jobs, restart_job, start_job
from batch.exceptions import (
    InvalidParameters,
    JobFailed,
    JobNotFound,
    JobStateConflict,
    UnknownJobDefinition,
)
from batch.models import JobInstance, WorkChunk
from batch.statuses import ChunkStatus, JobStatus
from tests.batch.factories import JobInstanceFactory
from tests.batch.helpers import emit

pytestmark = pytest.mark.django_db(transaction=True)


def test_invalid_parameters_list_every_problem_and_write_nothing(bus):
    with pytest.raises(InvalidParameters) as refused:
        start_job("DIAGNOSTIC_NOOP", {"chunks": -1, "sleep_ms": "long", "colour": 1}, max_concurrent_chunks=0)

    assert sorted(refused.value.problems) == sorted(
        [
            "unknown parameter 'colour'",
            "'chunks' must be at least 0, got -1",
            "'sleep_ms' must be an integer, got 'long'",
            "max concurrent chunks must be a positive integer, got 0",
        ]
    )
    assert not JobInstance.objects.exists() and not WorkChunk.objects.exists()
    assert bus.sent == []


def test_an_unknown_definition_is_refused(bus):
    with pytest.raises(UnknownJobDefinition, match="'NOPE'"):
        start_job("NOPE", {})


def test_start_records_who_started_it_and_where_it_runs(bus, settings):
    instance = start_job("DIAGNOSTIC_NOOP", {"chunks": 2}, started_by="alice")

    assert (instance.started_by, instance.node_id, instance.module_id) == (
        "alice",
        settings.NODE_ID,
        settings.MODULE_ID,
    )
    assert instance.parameters == {"chunks": 2, "sleep_ms": 0, "records_per_chunk": 1, "hang_at_chunk": -1}
    [(queue, _)] = bus.sent
    assert queue == f"batch2-work-notification-{settings.NODE_ID}-{settings.MODULE_ID}"


def test_unknown_ids_are_not_found():
    for action in (get_job, cancel_job, restart_job):
        with pytest.raises(JobNotFound):
            action("not-a-uuid")
        with pytest.raises(JobNotFound):
            action("00000000-0000-0000-0000-000000000000")


def test_list_filters_by_status_newest_first():
    JobInstanceFactory(status=JobStatus.COMPLETED)
    running = JobInstanceFactory(status=JobStatus.IN_PROGRESS)
    queued = JobInstanceFactory(status=JobStatus.QUEUED)

    assert [job.id for job in list_jobs([JobStatus.QUEUED, JobStatus.IN_PROGRESS])] == [queued.id, running.id]
    assert len(list_jobs()) == 3


@pytest.mark.parametrize("status", [JobStatus.QUEUED, JobStatus.IN_PROGRESS, JobStatus.FINALIZE, JobStatus.COMPLETED])
def test_only_failed_or_cancelled_jobs_can_be_restarted(status):
    instance = JobInstanceFactory(status=status)

    with pytest.raises(JobStateConflict, match=f"job {instance.id} is {status}"):
        restart_job(instance.id)


def test_restart_after_a_failure_resumes_without_redoing_completed_chunks(define_job, bus):
    runs = []
    broken = {3}

    def work(context, sink) -> int:
        runs.append(context.data["n"])
        if context.data["n"] in broken:
            raise JobFailed(f"row {context.data['n']} is bad")
        return 10

    job = define_job(lambda b: b.first_step("plan", emit(6)).last_step("work", work))
    instance = start_job(job.id, {})
    bus.drain()
    assert get_job(instance.id).status == JobStatus.FAILED
    done_before = set(
        WorkChunk.objects.filter(
            instance_id=instance.id, target_step_id="work", status=ChunkStatus.COMPLETED
        ).values_list("id", flat=True)
    )
    succeeded_before = set(runs) - {3}
    broken.clear()  # the cause is fixed
    runs.clear()

    restarted = restart_job(instance.id)
    assert (restarted.status, restarted.error_message, restarted.end_time) == (JobStatus.IN_PROGRESS, None, None)
    bus.drain()

    instance = get_job(instance.id)
    assert (instance.status, instance.combined_records_processed) == (JobStatus.COMPLETED, 60)
    assert sorted(runs) == sorted(set(range(6)) - succeeded_before), "only what had not succeeded runs again"
    assert set(WorkChunk.objects.filter(id__in=done_before, attempts=1).values_list("id", flat=True)) == done_before


def test_restart_after_a_cancel_runs_the_interrupted_and_the_waiting_chunks(define_job, bus):
    cancels = ["once"]

    def work(context, sink) -> int:
        if context.data["n"] == 1 and cancels:
            cancels.pop()
            cancel_job(context.instance_id)
            context.check_cancelled()
        return 1

    job = define_job(lambda b: b.first_step("plan", emit(3)).last_step("work", work))
    instance = start_job(job.id, {})
    bus.drain()
    statuses = sorted(
        WorkChunk.objects.filter(instance_id=instance.id, target_step_id="work").values_list("status", flat=True)
    )
    assert get_job(instance.id).status == JobStatus.CANCELLED
    assert statuses == [ChunkStatus.COMPLETED, ChunkStatus.QUEUED, ChunkStatus.READY]

    restart_job(instance.id)
    bus.drain()

    instance = get_job(instance.id)
    assert (instance.status, instance.cancelled, instance.combined_records_processed) == (JobStatus.COMPLETED, False, 3)


def test_restart_after_the_reducer_failed_runs_the_reduction_again(define_job, bus):
    failing = [True]

    def reduce(context, inputs) -> dict:
        total = sum(data["n"] for data in inputs)
        if failing[0]:
            raise RuntimeError("disk full")
        return {"total": total}

    def pass_on(context, sink) -> int:
        sink.accept({"n": context.data["n"]})
        return 1

    job = define_job(
        lambda b: b.gated().first_step("plan", emit(3)).intermediate_step("work", pass_on).reduction_step("sum", reduce)
    )
    instance = start_job(job.id, {})
    bus.drain()
    assert get_job(instance.id).status == JobStatus.FAILED
    failing[0] = False

    restart_job(instance.id)
    bus.drain()

    instance = get_job(instance.id)
    assert (instance.status, instance.report) == (JobStatus.COMPLETED, {"total": 3})


def test_an_ended_job_cannot_be_cancelled_and_says_why(bus):
    instance = start_job("DIAGNOSTIC_NOOP", {"chunks": 0})
    bus.drain()

    with pytest.raises(JobStateConflict, match="has already ended: it is COMPLETED"):
        cancel_job(instance.id)
