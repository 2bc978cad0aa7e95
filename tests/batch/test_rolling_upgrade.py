"""Mixed releases for one version step: what a job started by the previous release meets on the new one."""

import pytest

from batch.control import start_job
from batch.dispatch import on_work_notification
from batch.models import JobInstance, WorkChunk
from batch.notifications import WorkNotification
from batch.statuses import ChunkStatus, JobStatus
from tests.batch.helpers import count_records, emit

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_parameter_the_starting_release_never_stored_reads_as_its_default(define_job, bus):
    seen = []

    def work(context, sink) -> int:
        seen.append(context.parameters["hang_at_chunk"])  # a KeyError on a job the previous release started
        return 1

    job = define_job(
        lambda b: b.parameter("hang_at_chunk", int, default=-1).first_step("plan", emit(2)).last_step("work", work)
    )
    instance = start_job(job.id, {})
    JobInstance.objects.filter(id=instance.id).update(parameters={})  # as the previous release stored them

    bus.drain()

    assert seen == [-1, -1]
    assert JobInstance.objects.get(id=instance.id).status == JobStatus.COMPLETED


def test_work_of_a_definition_version_this_process_lacks_is_handed_back_unclaimed(define_job, bus):
    job = define_job(lambda b: b.first_step("plan", emit(1)).last_step("work", count_records()))
    instance = start_job(job.id, {})
    JobInstance.objects.filter(id=instance.id).update(definition_version=2)  # started by the next release
    [first] = bus.take()
    from_next_release = WorkNotification(instance.id, job.id, 2, first.target_step_id, first.chunk_id)

    assert on_work_notification(from_next_release) == {}

    chunk = WorkChunk.objects.get(id=first.chunk_id)
    assert (chunk.status, chunk.attempts, chunk.error_count) == (ChunkStatus.QUEUED, 0, 0)
    [handed_back] = bus.take()
    assert (handed_back.chunk_id, handed_back.definition_version) == (first.chunk_id, 2)
