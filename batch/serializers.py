"""The JSON shape of jobs, in the reference's camelCase: what the control API returns and
`job_status --json` prints."""
from __future__ import annotations

from rest_framework import serializers

from batch.exceptions import UnknownJobDefinition
from batch.models import JobInstance
from batch.progress import chunk_counts, describe_duration
from batch.registry import registry


class JobInstanceSerializer(serializers.Serializer):
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

    def get_estimatedTimeRemaining(self, instance: JobInstance) -> str | None:
        seconds = instance.estimated_seconds_remaining
        return describe_duration(seconds) if seconds is not None else None


class JobInstanceDetailSerializer(JobInstanceSerializer):
    steps = serializers.SerializerMethodField()

    def get_steps(self, instance: JobInstance) -> list[dict]:
        """Chunk counts per step and status, steps in the definition's order."""
        counts = chunk_counts(instance.id)
        try:
            order = [step.id for step in registry.get(instance.definition_id, instance.definition_version).steps]
        except UnknownJobDefinition:
            order = []
        order += sorted(set(counts) - set(order))
        return [{"stepId": step_id, "chunks": counts.get(step_id, {})} for step_id in order]


class StartJobRequest(serializers.Serializer):
    jobDefinitionId = serializers.CharField(max_length=100)
    parameters = serializers.JSONField(required=False, default=dict)
    maxConcurrentChunks = serializers.IntegerField(required=False, min_value=1, allow_null=True, default=None)
