import factory

from batch.models import JobInstance, WorkChunk
from batch.statuses import ChunkStatus, JobStatus


class JobInstanceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = JobInstance

    definition_id = "DIAGNOSTIC_NOOP"
    definition_version = 1
    status = JobStatus.IN_PROGRESS
    parameters = factory.LazyFunction(lambda: {"chunks": 1, "sleep_ms": 0, "records_per_chunk": 1})
    node_id = "test-node"
    module_id = "batch"


class WorkChunkFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = WorkChunk

    instance = factory.SubFactory(JobInstanceFactory)
    definition_id = factory.SelfAttribute("instance.definition_id")
    definition_version = factory.SelfAttribute("instance.definition_version")
    target_step_id = "sleep"
    sequence = factory.Sequence(int)
    status = ChunkStatus.READY
    data = factory.LazyFunction(lambda: {"index": 0})
