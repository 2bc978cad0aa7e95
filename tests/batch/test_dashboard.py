"""The dashboard's figures: each is one aggregate over the job and chunk rows, by the database's clock."""

from datetime import timedelta

import pytest
from django.utils import timezone

from batch import control, dashboard, waiting
from batch.heartbeats import record_heartbeat
from batch.queues import work_notification_queue
from batch.statuses import ChunkStatus, JobStatus
from jobsite.display import short_duration
from tests.batch.factories import JobInstanceFactory, WorkChunkFactory

pytestmark = pytest.mark.django_db


def test_job_counts_list_every_status_zeros_included():
    JobInstanceFactory.create_batch(2, status=JobStatus.FAILED)
    JobInstanceFactory(status=JobStatus.COMPLETED)

    counts = dashboard.job_counts_by_status()

    assert list(counts) == list(JobStatus)
    assert counts["FAILED"] == 2 and counts["COMPLETED"] == 1 and counts["QUEUED"] == 0


def test_throughput_counts_completed_chunks_and_their_records_per_minute_of_the_last_hour():
    now = timezone.now()
    job = JobInstanceFactory()
    for records in (10, 5):
        WorkChunkFactory(instance=job, status=ChunkStatus.COMPLETED, end_time=now, records_processed=records)
    WorkChunkFactory(
        instance=job, status=ChunkStatus.COMPLETED, end_time=now - timedelta(minutes=30), records_processed=1
    )
    WorkChunkFactory(
        instance=job, status=ChunkStatus.COMPLETED, end_time=now - timedelta(minutes=90), records_processed=7
    )
    WorkChunkFactory(instance=job, status=ChunkStatus.FAILED, end_time=now, records_processed=100)

    minutes = dashboard.throughput_per_minute()

    assert len(minutes) == 60
    assert (minutes[-1].chunks, minutes[-1].records) == (2, 15), "the current minute is last"
    assert (minutes[-31].chunks, minutes[-31].records) == (1, 1)
    assert sum(minute.chunks for minute in minutes) == 3, "neither the failed chunk nor the one 90 minutes ago"
    assert all(later.minute - earlier.minute == timedelta(minutes=1) for earlier, later in zip(minutes, minutes[1:]))


def test_settled_minutes_are_read_once_and_the_last_minutes_every_time():
    now = timezone.now()
    job = JobInstanceFactory()
    WorkChunkFactory(instance=job, status=ChunkStatus.COMPLETED, end_time=now - timedelta(minutes=30))
    assert sum(minute.chunks for minute in dashboard.throughput_per_minute()) == 1

    WorkChunkFactory(instance=job, status=ChunkStatus.COMPLETED, end_time=now - timedelta(minutes=30))
    WorkChunkFactory(instance=job, status=ChunkStatus.COMPLETED, end_time=now)
    minutes = dashboard.throughput_per_minute()

    assert minutes[-31].chunks == 1, "a settled minute is not aggregated again (a late row there is not counted)"
    assert minutes[-1].chunks == 1


def test_running_jobs_are_the_unfinished_ones_newest_first():
    older = JobInstanceFactory(status=JobStatus.IN_PROGRESS, create_time=timezone.now() - timedelta(hours=1))
    newer = JobInstanceFactory(status=JobStatus.QUEUED)
    JobInstanceFactory(status=JobStatus.COMPLETED)

    assert [job.id for job in dashboard.running_jobs()] == [newer.id, older.id]


def test_running_jobs_show_progress_rate_and_eta_from_their_chunks_not_the_stored_row():
    start = timezone.now() - timedelta(seconds=10)
    job = JobInstanceFactory(status=JobStatus.IN_PROGRESS, progress=0.0, combined_records_processed=0)
    WorkChunkFactory(
        instance=job,
        status=ChunkStatus.COMPLETED,
        start_time=start,
        end_time=start + timedelta(seconds=10),
        records_processed=40,
    )
    WorkChunkFactory(instance=job, status=ChunkStatus.IN_PROGRESS, start_time=start + timedelta(seconds=5))

    (running,) = dashboard.running_jobs()

    assert (running.progress, running.combined_records_processed, running.records_per_second) == (0.5, 40, 4.0)
    assert running.estimated_seconds_remaining == 10


def test_node_activity_counts_chunks_in_flight_per_node_and_names_its_queue_and_live_workers(settings):
    job = JobInstanceFactory(node_id="node-a", module_id="batch")
    WorkChunkFactory.create_batch(2, instance=job, status=ChunkStatus.IN_PROGRESS)
    WorkChunkFactory(instance=job, status=ChunkStatus.READY)
    record_heartbeat("w1@host/1", node_id="node-a", module_id="batch")
    record_heartbeat("w2@host/2", node_id="node-b", module_id="batch")

    nodes = {node.node_id: node for node in dashboard.node_activity()}

    assert nodes["node-a"].queue == work_notification_queue("node-a", "batch")
    assert nodes["node-a"].chunks_in_flight == 2
    assert nodes["node-a"].workers == ("w1@host/1",)
    assert nodes["node-a"].queue_depth == 0
    assert nodes["node-b"].workers == ("w2@host/2",), "a node with live workers and no job is listed"
    assert nodes[settings.NODE_ID].workers == (), "this node is listed even with no job and no worker"


def test_step_timeline_spans_each_step_with_its_records_and_rate():
    start = timezone.now() - timedelta(minutes=5)
    job = JobInstanceFactory()
    WorkChunkFactory(
        instance=job,
        target_step_id="generate-chunks",
        status=ChunkStatus.COMPLETED,
        start_time=start,
        end_time=start + timedelta(seconds=1),
        records_processed=0,
    )
    WorkChunkFactory(
        instance=job,
        target_step_id="sleep",
        status=ChunkStatus.COMPLETED,
        start_time=start + timedelta(seconds=1),
        end_time=start + timedelta(seconds=11),
        records_processed=50,
    )
    WorkChunkFactory(
        instance=job,
        target_step_id="sleep",
        status=ChunkStatus.IN_PROGRESS,
        start_time=start + timedelta(seconds=2),
        records_processed=None,
    )

    first_row, sleep_row = dashboard.step_timeline(control.get_job(job.id))
    first, sleep = first_row.step, sleep_row.step

    assert first.step_id == "generate-chunks" and first.duration_seconds == 1
    assert sleep.chunks == {"COMPLETED": 1, "IN_PROGRESS": 1} and (sleep.done, sleep.total) == (1, 2)
    assert sleep.records == 50 and sleep.records_per_second == 5.0
    assert (first_row.left_percent, first_row.width_percent) == (0, round(100 / 11, 2)), "a Gantt bar per step"
    assert (sleep_row.left_percent, sleep_row.width_percent, sleep_row.longest) == (round(100 / 11, 2), 90.91, True)


def test_job_errors_total_every_attempt_of_every_chunk_and_show_the_latest():
    job = JobInstanceFactory(status=JobStatus.FAILED, error_count=0)  # a stale row: the chunks are the truth
    WorkChunkFactory(
        instance=job, status=ChunkStatus.FAILED, error_count=4, attempts=4, worker="w1@host", error_message="disk full"
    )
    retrying = WorkChunkFactory(
        instance=job,
        status=ChunkStatus.ERRORED,
        error_count=1,
        error_message="timeout",
        announced_at=timezone.now() + timedelta(seconds=5),
    )
    WorkChunkFactory(instance=job, status=ChunkStatus.COMPLETED)

    errors = dashboard.job_errors(job.id)

    assert errors.total == 5 and errors.chunks_with_errors == 2
    assert {error.message for error in errors.shown} == {"disk full", "timeout"}
    assert next(error for error in errors.shown if error.chunk_id == retrying.id).next_attempt_at is not None
    assert control.get_job(job.id).error_count == 5


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (None, "-"),
        (0, "0 s"),
        (0.02, "< 0.1 s"),
        (0.4, "0.4 s"),
        (4, "4 s"),
        (199, "3 min 19 s"),
        (3600 + 5 * 60 + 2, "1 h 5 min"),
        (86400 * 2, "2 d"),
    ],
)
def test_durations_read_like_a_person_says_them(seconds, shown):
    assert short_duration(seconds) == shown


def test_an_ended_job_has_no_eta():
    JobInstanceFactory(status=JobStatus.IN_PROGRESS, estimated_seconds_remaining=80)
    JobInstanceFactory(status=JobStatus.CANCELLED, estimated_seconds_remaining=80)

    (running,) = control.list_jobs([JobStatus.IN_PROGRESS])
    (cancelled,) = control.list_jobs([JobStatus.CANCELLED])

    assert (dashboard.eta(running), dashboard.eta(cancelled)) == ("1 min 20 s", "-")


def test_why_a_queued_job_waits_gate_cap_no_worker_backoff_and_queue(define_job, settings):
    job = define_job(
        lambda b: (
            b.gated()
            .first_step("plan", lambda c, s: 0)
            .intermediate_step("work", lambda c, s: 1)
            .last_step("write", lambda c, s: 1)
        )
    )
    instance = JobInstanceFactory(
        definition_id=job.id,
        status=JobStatus.IN_PROGRESS,
        current_gated_step_id="work",
        node_id="nobody-home",
        max_concurrent_chunks=2,
    )
    WorkChunkFactory(instance=instance, target_step_id="plan", status=ChunkStatus.COMPLETED)
    WorkChunkFactory.create_batch(2, instance=instance, target_step_id="work", status=ChunkStatus.QUEUED)
    WorkChunkFactory.create_batch(3, instance=instance, target_step_id="work", status=ChunkStatus.READY)
    WorkChunkFactory(
        instance=instance,
        target_step_id="work",
        status=ChunkStatus.ERRORED,
        announced_at=timezone.now() + timedelta(minutes=5),
    )
    WorkChunkFactory.create_batch(4, instance=instance, target_step_id="write", status=ChunkStatus.GATE_WAITING)

    reasons = dashboard.why_waiting(control.get_job(instance.id))

    assert [reason.split(":")[0].split(" ")[0] for reason in reasons] == ["the", "its", "no", "1", "2"]
    assert (
        reasons[0]
        == "the gate: 4 chunks of the next step wait until the 6 unfinished chunks of step work have completed"
    )
    assert reasons[1] == "its concurrency cap: 2 of at most 2 chunks queued or running, 3 more ready"
    assert reasons[2].startswith("no live worker on node nobody-home (module batch)")
    assert "retry backoff after an error, until" in reasons[3]
    assert "messages wait for a worker" in reasons[4] and "batch2-work-notification-nobody-home-batch" in reasons[4]


def test_a_job_with_a_chunk_running_waits_only_for_what_that_chunk_says_until_it_lapses_or_is_cleared():
    instance = JobInstanceFactory(status=JobStatus.IN_PROGRESS)
    chunk = WorkChunkFactory(instance=instance, target_step_id="fetch", status=ChunkStatus.IN_PROGRESS)
    other = WorkChunkFactory(instance=instance, target_step_id="fetch", status=ChunkStatus.IN_PROGRESS)
    assert dashboard.why_waiting(control.get_job(instance.id)) == []

    waiting.note_waiting(instance.id, str(chunk.id), "fetch", "the source is down", for_seconds=60)
    waiting.note_waiting(instance.id, str(other.id), "fetch", "said long ago", for_seconds=0)  # lapsed at once
    assert dashboard.why_waiting(control.get_job(instance.id)) == [
        f"chunk {str(chunk.id)[:8]} of step fetch: the source is down"
    ]

    waiting.note_waiting(instance.id, str(chunk.id), "fetch", None, for_seconds=60)
    assert dashboard.why_waiting(control.get_job(instance.id)) == []
