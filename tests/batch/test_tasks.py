"""The work task: a message whose chunks errored or failed ends as a failed Celery task (the failure Flower
shows, with the chunks' messages), raised only after every chunk of the message ran and its outcome was
stored; the engine, not Celery, retries."""

import pytest

from batch.api import JobFailed
from batch.control import start_job
from batch.exceptions import ChunksErrored
from batch.models import JobInstance, WorkChunk
from batch.notifications import WorkNotification
from batch.statuses import ChunkStatus, JobStatus
from batch.tasks import work_notification
from batch.testing import time_passes
from tests.batch.helpers import emit

pytestmark = pytest.mark.django_db(transaction=True)


def failing_on(errors: dict[int, Exception], calls: list | None = None):
    """A step that raises `errors[n]` on its chunk `{"n": n}`'s first attempt and counts a record otherwise."""

    def step(context, sink) -> int:
        if calls is not None:
            calls.append(context.data["n"])
        if context.attempt == 1 and context.data["n"] in errors:
            raise errors[context.data["n"]]
        return 1

    return step


def announced_work(bus) -> list[dict]:
    """Deliver the first step's message in process; return the raw messages announcing the next step's chunks."""
    bus.deliver_next()
    messages = [message for _, message in bus.sent]
    bus.sent.clear()
    return messages


def run_task(message: dict):
    """Run the Celery task in this process, as a worker would run it (its exception kept on the result)."""
    return work_notification.apply(args=(message,))


def test_a_chunk_that_errors_fails_its_task_once_the_error_is_stored_and_the_engine_retries_it(
    define_job, bus, settings
):
    # Far longer than a loaded machine's pause between storing the error and the early delivery below (the
    # default 1 s was not, under a parallel run); time_passes moves the database's clock past it.
    settings.BATCH_RETRY_BACKOFF_SECONDS = (30.0,)
    job = define_job(
        lambda b: b.first_step("plan", emit(1)).last_step("work", failing_on({0: RuntimeError("storage hiccup")}))
    )
    instance = start_job(job.id, {})
    [message] = announced_work(bus)

    result = run_task(message)

    assert result.failed()
    chunk = WorkChunk.objects.get(instance_id=instance.id, target_step_id="work")
    assert (chunk.status, chunk.error_count, chunk.error_message) == (
        ChunkStatus.ERRORED,
        1,
        "RuntimeError: storage hiccup",
    ), "stored before the task raised"
    assert isinstance(result.result, ChunksErrored)
    assert result.result.errors == {str(chunk.id): "RuntimeError: storage hiccup"}
    assert str(result.result) == f"1 chunk errored: chunk {chunk.id}: RuntimeError: storage hiccup"
    [retry] = bus.take()
    assert retry.chunk_ids == [chunk.id], "the engine announced the retry itself (after its backoff)"
    assert run_task(retry.to_message()).successful()  # delivered early (a duplicate, a host clock ahead)...
    chunk.refresh_from_db()
    assert (chunk.status, chunk.attempts) == (ChunkStatus.ERRORED, 1), "...it finds nothing to claim before its time"

    with time_passes(settings.BATCH_RETRY_BACKOFF_SECONDS[0]):
        assert run_task(retry.to_message()).successful()
    chunk.refresh_from_db()
    assert (chunk.status, chunk.error_count, chunk.attempts) == (ChunkStatus.COMPLETED, 1, 2), "one error, counted once"
    assert JobInstance.objects.get(id=instance.id).status == JobStatus.COMPLETED


def test_a_chunk_that_fails_for_good_fails_its_task_with_the_chunks_message(define_job, bus):
    job = define_job(
        lambda b: b.first_step("plan", emit(1)).last_step("work", failing_on({0: JobFailed("the source is gone")}))
    )
    instance = start_job(job.id, {})
    [message] = announced_work(bus)

    result = run_task(message)

    chunk = WorkChunk.objects.get(instance_id=instance.id, target_step_id="work")
    assert (chunk.status, chunk.error_message) == (ChunkStatus.FAILED, "the source is gone")
    assert JobInstance.objects.get(id=instance.id).status == JobStatus.FAILED
    assert result.failed() and result.result.errors == {str(chunk.id): "the source is gone"}
    assert bus.take() == [], "no retry"


def test_a_chunk_past_its_retries_fails_its_task_with_the_message_the_chunk_was_given(define_job, bus, settings):
    settings.BATCH_MAX_CHUNK_RETRIES = 0
    job = define_job(lambda b: b.first_step("plan", emit(1)).last_step("work", failing_on({0: OSError("disk full")})))
    instance = start_job(job.id, {})
    [message] = announced_work(bus)

    result = run_task(message)

    chunk = WorkChunk.objects.get(instance_id=instance.id, target_step_id="work")
    assert chunk.status == ChunkStatus.FAILED
    assert result.result.errors == {str(chunk.id): "Too many errors: 1. Last error msg was OSError: disk full"}
    assert chunk.error_message == result.result.errors[str(chunk.id)]


def test_a_message_of_several_chunks_runs_them_all_then_raises_once_naming_those_that_errored(define_job, bus):
    calls = []
    job = define_job(
        lambda b: b.first_step("plan", emit(4)).last_step(
            "work", failing_on({1: ValueError("bad row 7"), 3: ValueError("bad row 9")}, calls)
        )
    )
    instance = start_job(job.id, {})
    announced = [WorkNotification.from_message(message) for message in announced_work(bus)]
    chunk_ids = [chunk_id for notification in announced for chunk_id in notification.chunk_ids]
    shared = WorkNotification(instance.id, job.id, job.version, "work", chunk_ids[0], tuple(chunk_ids[1:]))

    result = run_task(shared.to_message())

    assert sorted(calls) == [0, 1, 2, 3], "every chunk of the message ran"
    errored = {
        str(chunk.id): chunk.error_message
        for chunk in WorkChunk.objects.filter(
            instance_id=instance.id, target_step_id="work", status=ChunkStatus.ERRORED
        )
    }
    assert sorted(errored.values()) == ["ValueError: bad row 7", "ValueError: bad row 9"]
    assert result.result.errors == errored
    assert str(result.result).startswith("2 chunks errored: ")


def test_the_task_leaves_retries_to_the_engine_and_acknowledges_its_message_when_it_raises():
    assert not getattr(work_notification, "autoretry_for", ()), "Celery does not retry: the engine does"
    assert work_notification.acks_late and work_notification.acks_on_failure
    assert work_notification.throws == (ChunksErrored,), "logged in one line: the step's traceback is logged already"
