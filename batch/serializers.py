"""The JSON shape of jobs, in the reference's camelCase: what the control API returns and
`job_status --json` prints."""

from __future__ import annotations

from rest_framework import serializers

from batch.control import JobSnapshot, chunk_workers, describe_duration


class JobSerializer(serializers.Serializer):
    instanceId = serializers.UUIDField(source="id")
    jobDefinitionId = serializers.CharField(source="definition_id")
    jobDefinitionVersion = serializers.IntegerField(source="definition_version")
    status = serializers.CharField()
    cancelled = serializers.BooleanField()
    parameters = serializers.JSONField()
    createTime = serializers.DateTimeField(source="create_time")
    startTime = serializers.DateTimeField(source="start_time")
    endTime = serializers.DateTimeField(source="end_time")
    updateTime = serializers.DateTimeField(source="update_time")
    progress = serializers.FloatField()
    combinedRecordsProcessed = serializers.IntegerField(source="combined_records_processed")
    recordsPerSecond = serializers.FloatField(source="records_per_second")
    elapsedSeconds = serializers.FloatField(source="elapsed_seconds")
    estimatedSecondsRemaining = serializers.FloatField(source="estimated_seconds_remaining")
    estimatedTimeRemaining = serializers.SerializerMethodField()
    errorCount = serializers.IntegerField(source="error_count")
    errorMessage = serializers.CharField(source="error_message")
    warningMessages = serializers.CharField(source="warning_messages")
    currentGatedStepId = serializers.CharField(source="current_gated_step_id")
    report = serializers.JSONField()
    startedBy = serializers.CharField(source="started_by")
    nodeId = serializers.CharField(source="node_id")
    moduleId = serializers.CharField(source="module_id")
    maxConcurrentChunks = serializers.IntegerField(source="max_concurrent_chunks")

    def get_estimatedTimeRemaining(self, job: JobSnapshot) -> str | None:
        seconds = job.estimated_seconds_remaining
        return describe_duration(seconds) if seconds is not None else None


class JobDetailSerializer(JobSerializer):
    steps = serializers.SerializerMethodField()
    workers = serializers.SerializerMethodField()

    def get_steps(self, job: JobSnapshot) -> list[dict]:
        """Chunk counts per step and status, steps in the definition's order."""
        return [{"stepId": step.step_id, "chunks": dict(step.chunks)} for step in job.steps]

    def get_workers(self, job: JobSnapshot) -> list[dict]:
        """Where the job's chunks ran: each worker (Celery hostname/pid), its host, its chunks by status."""
        return [
            {
                "worker": worker.worker,
                "host": worker.host,
                "chunks": dict(worker.chunks),
                "recordsProcessed": worker.records,
                "lastUpdate": worker.last_update.isoformat(),
            }
            for worker in chunk_workers(job.id)
        ]


class StartJobRequest(serializers.Serializer):
    jobDefinitionId = serializers.CharField(max_length=100)
    parameters = serializers.JSONField(required=False, default=dict)
    maxConcurrentChunks = serializers.IntegerField(
        required=False, min_value=1, max_value=2**31 - 1, allow_null=True, default=None
    )
