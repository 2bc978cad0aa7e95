"""Mixed releases for one version step: what a job started by the previous release meets on the new one."""
import pytest

from batch.coordinator import start_job
from batch.models import JobInstance
from batch.statuses import JobStatus
from tests.batch.conftest import emit

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_parameter_the_starting_release_never_stored_reads_as_its_default(define_job, bus):
    seen = []

    def work(context, sink) -> int:
        seen.append(context.parameters["hang_at_chunk"])  # a KeyError on a job the previous release started
        return 1

    job = define_job(lambda b: b.parameter("hang_at_chunk", int, default=-1).first_step("plan", emit(2))
                     .last_step("work", work))
    instance = start_job(job.id, {})
    JobInstance.objects.filter(id=instance.id).update(parameters={})  # as the previous release stored them

    bus.drain()

    assert seen == [-1, -1]
    assert JobInstance.objects.get(id=instance.id).status == JobStatus.COMPLETED
