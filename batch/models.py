"""Durable state of batch jobs: one row per job instance, one row per unit of work (chunk).

The rows are the truth; Redis messages only announce them. Statuses change only through
`batch.transitions` (conditional updates), never by assigning `status` and calling `save()`.
"""

from __future__ import annotations

import uuid

from django.db import models
from django.db.models import Q
from django.db.models.functions import Now

from batch.api import MAX_ID_LENGTH as ID_LENGTH
from batch.statuses import UNFINISHED_JOB_STATUSES, ChunkStatus, JobStatus

DATABASE_CLOCK = models.Func(function="clock_timestamp", output_field=models.DateTimeField())


class JobInstance(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    definition_id = models.CharField(max_length=ID_LENGTH)
    definition_version = models.PositiveIntegerField()
    status = models.CharField(max_length=16, choices=JobStatus.choices, default=JobStatus.QUEUED)
    cancelled = models.BooleanField(default=False)
    parameters = models.JSONField(default=dict)

    # The database's clock, never the inserting host's: maintenance judges a job's age by it (`batch.nodes`),
    # and hosts' clocks disagree. clock_timestamp(), not now(): jobs started in one transaction keep their order.
    create_time = models.DateTimeField(db_default=DATABASE_CLOCK)
    start_time = models.DateTimeField(null=True, blank=True)
    end_time = models.DateTimeField(null=True, blank=True)
    update_time = models.DateTimeField(db_default=Now())

    combined_records_processed = models.BigIntegerField(default=0)
    records_per_second = models.FloatField(null=True, blank=True)
    elapsed_seconds = models.FloatField(null=True, blank=True)
    progress = models.FloatField(default=0.0)  # completed chunks / all chunks, 0..1
    estimated_seconds_remaining = models.FloatField(null=True, blank=True)
    # Time spent FAILED or CANCELLED before a restart: not running, so not in the job's rate.
    paused_seconds = models.FloatField(default=0.0)
    error_count = models.IntegerField(default=0)
    error_message = models.TextField(null=True, blank=True)
    warning_messages = models.TextField(null=True, blank=True)

    current_gated_step_id = models.CharField(max_length=ID_LENGTH, null=True, blank=True)
    report = models.JSONField(null=True, blank=True)
    started_by = models.CharField(max_length=150, blank=True)
    node_id = models.CharField(max_length=64)
    module_id = models.CharField(max_length=64)
    max_concurrent_chunks = models.PositiveIntegerField(null=True, blank=True)

    # The reducer holds this lease while it runs; when it lapses the reduction is announced again.
    reducer_lease_expires_at = models.DateTimeField(null=True, blank=True)
    reducer_attempts = models.IntegerField(default=0)

    class Meta:
        ordering = ["-create_time"]
        indexes = [
            models.Index(fields=["-create_time"], name="batch_job_created"),
            models.Index(fields=["status", "-create_time"], name="batch_job_status_created"),
            models.Index(fields=["definition_id", "-create_time"], name="batch_job_definition_created"),
            # Maintenance walks only the unfinished instances.
            models.Index(
                fields=["id"], name="batch_job_unfinished", condition=Q(status__in=sorted(UNFINISHED_JOB_STATUSES))
            ),
            models.Index(fields=["end_time"], name="batch_job_ended", condition=Q(end_time__isnull=False)),
        ]

    def __str__(self) -> str:
        return f"{self.definition_id} v{self.definition_version} {self.id} ({self.status})"


class WorkChunk(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    instance = models.ForeignKey(JobInstance, on_delete=models.CASCADE, related_name="chunks", db_index=False)
    definition_id = models.CharField(max_length=ID_LENGTH)
    definition_version = models.PositiveIntegerField()
    target_step_id = models.CharField(max_length=ID_LENGTH)
    sequence = models.IntegerField(default=0)  # order among the chunks emitted by one step run
    status = models.CharField(max_length=16, choices=ChunkStatus.choices)
    data = models.JSONField(null=True, blank=True)  # cleared once the chunk completes

    records_processed = models.BigIntegerField(null=True, blank=True)
    error_count = models.IntegerField(default=0)
    error_message = models.TextField(null=True, blank=True)
    warning_message = models.TextField(null=True, blank=True)

    create_time = models.DateTimeField(db_default=Now())  # the database's clock, as every chunk time
    start_time = models.DateTimeField(null=True, blank=True)
    end_time = models.DateTimeField(null=True, blank=True)
    update_time = models.DateTimeField(db_default=Now())
    next_poll_time = models.DateTimeField(null=True, blank=True)
    poll_attempts = models.IntegerField(default=0)

    # When the chunk was last announced on its node's queue (to find announcements that got lost).
    announced_at = models.DateTimeField(null=True, blank=True)
    # Claims so far (bumped by every claim; a restart keeps counting).
    attempts = models.IntegerField(default=0)
    # A random token drawn by each claim: every outcome and lease renewal is conditional on it, so a worker
    # that lost its chunk (lease lapsed, overrun, job restarted) can never record over the current claim.
    claim_token = models.UUIDField(null=True, blank=True)
    # An IN_PROGRESS chunk belongs to its worker until then; the worker renews it while the step runs.
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    worker = models.CharField(max_length=200, blank=True)  # Celery hostname and pid of the last claimer
    # The database time of the last progress a claim's step reported, written by its lease renewal: the
    # worker's watchdog counts the chunk's maximum run time from here when that is later than the claim
    # (`batch.recycling`). Not reset by a claim: an earlier claim's value is older than the new claim.
    progress_at = models.DateTimeField(null=True, blank=True)
    task_id = models.CharField(max_length=64, blank=True)  # Celery task id of the last claim (Flower)

    class Meta:
        indexes = [
            # "Is anything unfinished?" and "which chunks are READY?" per instance.
            models.Index(fields=["instance", "status"], name="batch_chunk_instance_status"),
            # Per-step counts, progress figures and gate checks, answered from the index alone.
            models.Index(
                fields=["instance", "target_step_id", "status"],
                include=["records_processed", "error_count", "start_time", "end_time"],
                name="batch_chunk_step_status",
            ),
            # "Is anything left in this step / job?" after every chunk: stops at the first few entries.
            models.Index(
                fields=["instance", "target_step_id"],
                name="batch_chunk_unfinished",
                condition=~Q(status=ChunkStatus.COMPLETED),
            ),
            # The dashboard's throughput: chunks completed in the last hour, by minute.
            # Each minute's records are those of the step that counts a job's records (its definition says which).
            models.Index(
                fields=["end_time"],
                include=["records_processed", "definition_id", "definition_version", "target_step_id"],
                name="batch_chunk_completed_end_step",
                condition=Q(status=ChunkStatus.COMPLETED),
            ),
            # Maintenance: leases that ran out.
            models.Index(
                fields=["lease_expires_at"], name="batch_chunk_leases", condition=Q(status=ChunkStatus.IN_PROGRESS)
            ),
        ]

    def __str__(self) -> str:
        return f"chunk {self.id} -> {self.target_step_id} ({self.status})"


class WorkerHeartbeat(models.Model):
    """A batch worker's last sign of life, one row per worker (Celery hostname and main pid).

    Stamped with PostgreSQL's clock, so "not seen for N seconds" means the same on every machine. A
    node is alive while one of its workers has beaten recently; see `batch.heartbeats` and `batch.nodes`.
    """

    worker = models.CharField(max_length=200, unique=True)
    node_id = models.CharField(max_length=64)
    module_id = models.CharField(max_length=64)
    started_at = models.DateTimeField(db_default=Now())
    last_seen = models.DateTimeField(db_default=Now())
    stopped_at = models.DateTimeField(null=True, blank=True)  # set by a clean shutdown
    # BATCH_SETTINGS_FINGERPRINT of the worker's process: opaque to the engine, which only stores it; the
    # project compares them across live workers (settings every host must share) and says which differ.
    settings_fingerprint = models.TextField(blank=True, default="")

    class Meta:
        indexes = [models.Index(fields=["node_id", "module_id", "last_seen"], name="batch_heartbeat_node_seen")]

    def __str__(self) -> str:
        return f"{self.worker} ({self.node_id}/{self.module_id})"


class JobReassignment(models.Model):
    """A job moved from one node's queue to another's: by maintenance (dead node) or an operator.

    Kept as rows, not folded into the job's warnings, because the progress refresh rewrites those from
    the chunks; `batch.progress` adds these back in front of them.
    """

    instance = models.ForeignKey(JobInstance, on_delete=models.CASCADE, related_name="reassignments")
    from_node_id = models.CharField(max_length=64)
    to_node_id = models.CharField(max_length=64)
    reason = models.CharField(max_length=500)
    at = models.DateTimeField(db_default=Now())
    # An operator's forced move to a node with no live worker (`reassign_jobs --force`): maintenance leaves the
    # job there until that node's workers have beaten after the move (then it is a node like any other).
    forced = models.BooleanField(default=False, db_default=False)

    class Meta:
        ordering = ["at", "id"]

    def __str__(self) -> str:
        return self.describe()

    def describe(self) -> str:
        """The line the job's warnings show, e.g. `2026-11-30 00:01:02 UTC: moved from node a to node b: …`."""
        return (
            f"{self.at:%Y-%m-%d %H:%M:%S %Z}: moved from node {self.from_node_id} to node {self.to_node_id}: "
            f"{self.reason}"
        )


class MaintenancePass(models.Model):
    """One row: when the last maintenance pass of the cluster ended, by the database's clock.

    Batch workers read it to step in when the scheduled pass is starved (see `batch.maintenance_watchdog`).
    """

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    ended_at = models.DateTimeField()


class MaintenanceLease(models.Model):
    """One row: which maintenance pass may run now, until when (the database's clock).

    A lease, not a session-level advisory lock: a lock lives as long as its holder's backend, and the
    backend of a host that powered off lives on for hours (until TCP gives up). The lease lapses on the
    database's clock whatever became of its holder; the pass renews it as it goes (`batch.maintenance`).
    """

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    holder = models.CharField(max_length=200)  # `host:pid:token` of the pass, for the operator's eyes
    token = models.UUIDField()  # the holding pass's own; renewals and the release are fenced by it
    expires_at = models.DateTimeField()
