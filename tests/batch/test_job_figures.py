"""The numbers an operator reads (issue #24, "Numbers you can believe"): a job's records counted once, progress
and ETA of gated jobs, no ETA once ended, rate over running time only, every failed attempt an error."""

from collections.abc import Callable
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from batch import control, dashboard
from batch.api import InvalidJobDefinition, JobDefinitionBuilder, JobFailed
from batch.control import restart_job, start_job
from batch.models import JobInstance
from batch.serializers import JobDetailSerializer
from batch.statuses import ChunkStatus, JobStatus
from batch.testing import time_passes
from tests.batch.factories import JobInstanceFactory, WorkChunkFactory
from tests.batch.helpers import count_records, emit

pytestmark = pytest.mark.django_db(transaction=True)


def pass_on(records: int):
    """A step that handles `records` records and hands its chunk on: what expand-resources does in an export."""

    def step(context, sink) -> int:
        sink.accept(dict(context.data))
        return records

    return step


def failing_once(error: Exception, records: int) -> tuple[Callable, list[int]]:
    """A step whose first run raises `error` and whose later runs handle `records` records; and the attempt
    numbers it saw."""
    attempts: list[int] = []

    def step(context, sink) -> int:
        attempts.append(context.attempt)
        if len(attempts) == 1:
            raise error
        return records

    return step, attempts


def gated_job_at(
    job,
    step: str,
    *,
    first_step: str,
    first_seconds: int,
    completed: int,
    emitted: tuple[str, str],
    queued: int,
    records: int | None = None,
) -> JobInstance:
    """Rows of `job` running its gated `step`, as if it ran until now: the first step's one chunk took
    `first_seconds`, then `completed` chunks of `step` ran one a second (`records` each, if given), each
    emitting one chunk (step, status) `emitted`; `queued` chunks of `step` are still to run."""
    start = timezone.now() - timedelta(seconds=first_seconds + completed)
    instance = JobInstanceFactory(definition_id=job.id, status=JobStatus.IN_PROGRESS, current_gated_step_id=step)
    WorkChunkFactory(
        instance=instance,
        target_step_id=first_step,
        status=ChunkStatus.COMPLETED,
        records_processed=0,
        start_time=start,
        end_time=start + timedelta(seconds=first_seconds),
    )
    for n in range(completed):
        began = start + timedelta(seconds=first_seconds + n)
        WorkChunkFactory(
            instance=instance,
            target_step_id=step,
            status=ChunkStatus.COMPLETED,
            records_processed=records,
            start_time=began,
            end_time=began + timedelta(seconds=1),
        )
        WorkChunkFactory(instance=instance, target_step_id=emitted[0], status=emitted[1])
    WorkChunkFactory.create_batch(queued, instance=instance, target_step_id=step, status=ChunkStatus.QUEUED)
    return instance


def read_expand_write(builder: JobDefinitionBuilder) -> JobDefinitionBuilder:
    """Three steps that each handle the same 5 resources per chunk, as an export reads, expands and writes them."""
    return (
        builder.gated()
        .first_step("read", emit(3))
        .intermediate_step("expand", pass_on(5))
        .last_step("write", count_records(5))
    )


def test_a_job_s_records_are_its_last_step_s_counted_once_everywhere(define_job, bus):
    job = define_job(read_expand_write)
    instance = start_job(job.id, {})
    bus.drain()

    ended = control.get_job(instance.id)
    assert ended.status == JobStatus.COMPLETED
    assert ended.combined_records_processed == 15, "3 chunks of 5 resources, not expand's and write's added up"
    assert JobInstance.objects.get(id=instance.id).combined_records_processed == 15
    assert JobDetailSerializer(ended).data["combinedRecordsProcessed"] == 15
    assert {row.step.step_id: row.step.records for row in dashboard.step_timeline(ended)} == {
        "read": 0,
        "expand": 15,
        "write": 15,
    }, "each step still shows its own records"
    assert sum(minute.records for minute in dashboard.throughput_per_minute()) == 15
    out = StringIO()
    call_command("job_status", str(instance.id), stdout=out)
    assert ", 15 records," in out.getvalue()


def test_a_definition_names_the_step_whose_records_are_the_job_s(define_job, bus):
    job = define_job(lambda b: read_expand_write(b).counts_records_of("expand"))
    instance = start_job(job.id, {})
    bus.drain()

    assert control.get_job(instance.id).combined_records_processed == 15
    assert job.records_step_id == "expand"


def test_only_a_step_that_runs_chunks_can_count_the_job_s_records():
    with pytest.raises(InvalidJobDefinition, match="counts_records_of: 'nope' is not a step that runs chunks"):
        (
            JobDefinitionBuilder("X", 1)
            .first_step("a", emit(1))
            .last_step("b", count_records())
            .counts_records_of("nope")
            .build()
        )


def test_a_gated_job_at_88_percent_reads_88_percent_and_the_eta_of_its_last_24_chunks(define_job):
    """The reduction's input chunks appear as the step before completes: they are not work still to do."""
    job = define_job(
        lambda b: (
            b.gated()
            .first_step("generate", emit(0))
            .intermediate_step("sleep", pass_on(1))
            .reduction_step("sum", lambda context, inputs: {})
        )
    )
    instance = gated_job_at(
        job,
        "sleep",
        first_step="generate",
        first_seconds=10,
        completed=176,
        records=1,
        emitted=("sum", ChunkStatus.REDUCTION_READY),
        queued=24,
    )

    snapshot = control.get_job(instance.id)
    [running] = dashboard.running_jobs()

    for figures in (snapshot, running):
        assert figures.progress == pytest.approx(186 / 210, abs=0.01), "was 177/377 = 47 %"
        assert figures.estimated_seconds_remaining == pytest.approx(24, abs=1)
        assert figures.combined_records_processed == 176


def test_a_gated_step_s_chunks_still_to_come_are_expected_in_the_proportion_so_far(define_job):
    """Half of `expand` done has emitted half of `write`'s chunks: `write` is expected to have all 100."""
    job = define_job(read_expand_write)
    instance = gated_job_at(
        job,
        "expand",
        first_step="read",
        first_seconds=1,
        completed=50,
        emitted=("write", ChunkStatus.GATE_WAITING),
        queued=50,
    )

    snapshot = control.get_job(instance.id)

    assert snapshot.estimated_seconds_remaining == pytest.approx(50 + 100), "50 expand and 100 write chunks, 1 s each"
    assert snapshot.progress == pytest.approx(51 / 201)


@pytest.mark.parametrize("status", [JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.COMPLETED])
def test_an_ended_job_has_no_eta(status):
    instance = JobInstanceFactory(status=status, end_time=timezone.now(), estimated_seconds_remaining=30.0)
    start = timezone.now() - timedelta(minutes=10)
    WorkChunkFactory(
        instance=instance,
        status=ChunkStatus.COMPLETED,
        records_processed=3,
        start_time=start,
        end_time=start + timedelta(minutes=1),
    )
    WorkChunkFactory(instance=instance, status=ChunkStatus.QUEUED)

    snapshot = control.get_job(instance.id)
    shown = JobDetailSerializer(snapshot).data
    out = StringIO()
    call_command("job_status", str(instance.id), stdout=out)

    assert snapshot.estimated_seconds_remaining is None
    assert (shown["estimatedSecondsRemaining"], shown["estimatedTimeRemaining"]) == (None, None)
    assert "ETA" not in out.getvalue()
    assert dashboard.eta(snapshot) == "-"


def test_a_restarted_job_s_rate_counts_only_its_running_time_and_its_first_attempt_failure_counts(define_job, bus):
    fails_once, _ = failing_once(JobFailed("the source is down"), records=10)
    job = define_job(lambda b: b.first_step("plan", emit(2)).last_step("work", fails_once))
    instance = start_job(job.id, {})
    bus.drain()
    failed = control.get_job(instance.id)
    assert (failed.status, failed.error_count) == (JobStatus.FAILED, 1), "a first-attempt failure is an error"
    assert JobInstance.objects.get(id=instance.id).error_count == 1

    with time_passes(600):  # the job sat FAILED for ten minutes before an operator restarted it
        restart_job(instance.id)
    bus.drain()

    ended = control.get_job(instance.id)
    assert ended.status == JobStatus.COMPLETED
    assert ended.elapsed_seconds < 60, "the ten minutes FAILED are not running time"
    assert ended.records_per_second > 20 / 60
    assert JobInstance.objects.get(id=instance.id).paused_seconds == pytest.approx(600, abs=30)


def test_retry_now_runs_a_running_job_s_errored_chunk_without_waiting_out_its_backoff(define_job, bus, admin_client):
    flaky, calls = failing_once(ValueError("the source hiccuped"), records=1)
    job = define_job(lambda b: b.first_step("plan", emit(1)).last_step("work", flaky))
    instance = start_job(job.id, {})
    bus.deliver_next()  # plan
    bus.deliver_next()  # work: errors, and is announced again for when its backoff ends ...
    assert control.get_job(instance.id).step("work").chunks == {ChunkStatus.ERRORED: 1}
    bus.take()  # ... a message the bus would deliver at once: dropped, so only Retry now runs the chunk

    response = admin_client.post(f"/admin/batch/jobinstance/{instance.id}/retry/")
    bus.drain()

    assert response.status_code == 302
    assert control.get_job(instance.id).status == JobStatus.COMPLETED and calls == [1, 2]


def test_retrying_a_failed_job_s_chunks_resumes_it_and_nothing_to_retry_is_a_conflict(define_job, bus):
    fails_first, _ = failing_once(JobFailed("down"), records=1)
    job = define_job(lambda b: b.first_step("plan", emit(1)).last_step("work", fails_first))
    instance = start_job(job.id, {})
    bus.drain()
    assert control.get_job(instance.id).status == JobStatus.FAILED

    assert control.retry_failed_chunks(instance.id) == 1
    bus.drain()
    assert control.get_job(instance.id).status == JobStatus.COMPLETED
    with pytest.raises(control.JobStateConflict):
        control.retry_failed_chunks(instance.id)
