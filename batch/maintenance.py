"""The maintenance pass: the safety net that moves every unfinished job on, whatever got lost.

Per unfinished instance, as the reference: due POLL_WAITING chunks become READY; progress is recomputed;
a gate whose step is done opens (or the job completes); READY chunks are queued. Beyond the reference:
chunks whose worker stopped renewing its lease are retried (or failed at the limit), QUEUED chunks whose
message was lost (Redis restarted or flushed, a worker killed with the message in hand) are announced
again, a FINALIZE job whose reducer died gets a new one, and the jobs of a node without live workers
move to a live node (`batch.nodes`). Ended jobs are deleted after a week.

A plain function, callable from anywhere (beat task, test, shell). Only one pass runs at a time in the
cluster (a lease on the database's clock, `batch.maintenance_lease`, renewed between jobs); a second
caller returns at once, and a holder that died or froze stops holding it after
`BATCH_MAINTENANCE_LEASE_SECONDS`. Each change inside is a conditional update anyway, so even two
passes could not corrupt anything.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from django.db import connection, transaction
from django.db.models import Q

from batch import flow, sql
from batch.claims import ClaimedChunk, ClaimedJob
from batch.conf import batch_settings
from batch.maintenance_lease import LeaseLost, maintenance_lease
from batch.metrics import maintenance_pass_duration
from batch.models import JobInstance, WorkChunk
from batch.nodes import rehome_stranded_jobs
from batch.progress import refresh_progress
from batch.queues import broker_is_reachable, pending_notifications, work_notification_queue
from batch.registry import registry
from batch.statuses import (
    ENDED_JOB_STATUSES,
    UNFINISHED_JOB_STATUSES,
    ChunkStatus,
    JobStatus,
)
from batch.transitions import change_all_chunks_status, read_database_now
from batch.worker import on_lease_expired

logger = logging.getLogger(__name__)

INSTANCE_PAGE = 100  # instances read per query
CHUNK_PAGE = 1000  # chunks of one kind handled per instance per pass; the rest wait for the next pass
LATE_AFTER_INTERVALS = 3  # a pass starting this many intervals after the last one ended says it is late
DELETE_PAGE = 5000  # chunks deleted per statement when an ended job is purged


@dataclass
class MaintenanceReport:
    ran: bool = True
    instances: int = 0
    polls_due: int = 0
    leases_expired: int = 0
    enqueued: int = 0
    reannounced: int = 0
    retries_resent: int = 0
    reductions_reannounced: int = 0
    purged_instances: int = 0
    rehomed: int = 0


def run_maintenance_pass() -> MaintenanceReport:
    if not broker_is_reachable():  # its calls to Redis would block the pass; a host that reaches both runs it
        logger.warning("the broker does not answer from this host: no maintenance pass here")
        return MaintenanceReport(ran=False)
    with maintenance_lease() as lease:
        if lease is None:
            logger.debug("another maintenance pass is running; this one skips")
            return MaintenanceReport(ran=False)
        with maintenance_pass_duration.time():  # a pass that ran, as long as it ran
            _say_if_late()
            report = MaintenanceReport(rehomed=rehome_stranded_jobs())  # first: the jobs below see their new node
            try:
                for instance in _unfinished_instances():
                    lease.renew()
                    report.instances += 1
                    try:
                        maintain_instance(instance, report)
                    except Exception:
                        logger.exception("maintenance of job %s failed; the other jobs go on", instance.id)
                lease.renew()
            except LeaseLost as lost:
                logger.warning("%s", lost)
                return report
            _purge_ended(report)
            _record_pass_ended()
    return report


def _say_if_late() -> None:
    """A log line when the last pass ended more than LATE_AFTER_INTERVALS ago: passes were skipped (no scheduler,
    a lapsed lease, a host cut off) and whatever they would have recovered waited that long."""
    with connection.cursor() as cursor:
        cursor.execute(sql.SECONDS_SINCE_LAST_PASS)
        row = cursor.fetchone()
    interval = batch_settings().maintenance_interval.total_seconds()
    if row is not None and row[0] > LATE_AFTER_INTERVALS * interval:
        logger.warning(
            "maintenance is late: the last pass ended %.0f s ago (one is due every %.0f s)", row[0], interval
        )


def _record_pass_ended() -> None:
    """Tell the batch workers' watchdogs that maintenance is not starved (`batch.maintenance_watchdog`)."""
    with connection.cursor() as cursor:
        cursor.execute(sql.RECORD_PASS_ENDED)


def maintain_instance(instance: JobInstance, report: MaintenanceReport) -> None:
    now, database_started_at = _database_clock()  # every "is it late" below is judged by the database's clock
    if instance.status == JobStatus.FINALIZE:
        _recover_reduction(instance, now, report)
    else:
        report.polls_due += change_all_chunks_status(
            Q(instance_id=instance.id, status=ChunkStatus.POLL_WAITING, next_poll_time__lte=now), ChunkStatus.READY
        )
        expired = (
            WorkChunk.objects.select_related("instance")
            .filter(instance_id=instance.id, status=ChunkStatus.IN_PROGRESS, lease_expires_at__lt=now)
            .order_by("lease_expires_at")[:CHUNK_PAGE]
        )
        for chunk in expired:
            on_lease_expired(held_claim(chunk), now, database_started_at)
            report.leases_expired += 1
        if instance.current_gated_step_id:
            # Chunks a lost worker emitted into a step whose gate has opened meanwhile.
            change_all_chunks_status(
                Q(
                    instance_id=instance.id,
                    target_step_id=instance.current_gated_step_id,
                    status=ChunkStatus.GATE_WAITING,
                ),
                ChunkStatus.READY,
            )
        report.retries_resent += _resend_overdue_retries(instance, now)  # first, whatever the queue holds
        flow.advance_job(instance.id)
        report.enqueued += flow.enqueue_ready_chunks(instance)
        report.reannounced += _reannounce_lost_chunks(instance, now)
    if JobInstance.objects.filter(id=instance.id, status__in=UNFINISHED_JOB_STATUSES).exists():
        refresh_progress(instance.id)


def held_claim(chunk: WorkChunk) -> ClaimedChunk:
    """A chunk row IN_PROGRESS, as the claim its worker holds (a lapsed lease here, a hung step in
    `batch.recycling`): every outcome given for it is fenced by its claim token."""
    instance = chunk.instance
    job = ClaimedJob(
        id=instance.id,
        definition_id=instance.definition_id,
        definition_version=instance.definition_version,
        parameters=instance.parameters,
        node_id=instance.node_id,
        module_id=instance.module_id,
        max_concurrent_chunks=instance.max_concurrent_chunks,
    )
    return ClaimedChunk(
        id=chunk.id,
        job=job,
        target_step_id=chunk.target_step_id,
        sequence=chunk.sequence,
        data=chunk.data,
        attempts=chunk.attempts,
        error_count=chunk.error_count,
        poll_attempts=chunk.poll_attempts,
        claim_token=chunk.claim_token,
        worker=chunk.worker,
        lease_expires_at=chunk.lease_expires_at,
    )


def _database_clock() -> tuple[datetime, datetime]:
    """The database's now, and when it (re)started: a lease last renewed before then lapsed with the restart."""
    with connection.cursor() as cursor:
        cursor.execute(sql.DATABASE_NOW_AND_START)
        return cursor.fetchone()


def _unfinished_instances() -> Iterator[JobInstance]:
    after = None
    while True:
        page = JobInstance.objects.filter(status__in=UNFINISHED_JOB_STATUSES).order_by("id")
        if after is not None:
            page = page.filter(id__gt=after)
        instances = list(page[:INSTANCE_PAGE])
        yield from instances
        if len(instances) < INSTANCE_PAGE:
            return
        after = instances[-1].id


def _queue_is_drained(instance: JobInstance) -> bool:
    """With nothing waiting in the node's queue (new work or again), an old unclaimed announcement can only
    have been lost."""
    return pending_notifications(work_notification_queue(instance.node_id, instance.module_id)) == 0


def _resend_overdue_retries(instance: JobInstance, now: datetime) -> int:
    """ERRORED chunks still unclaimed one maintenance interval after their retry was due: their message was
    lost (a worker killed while holding it for its countdown, Redis flushed) or arrived early and found
    nothing to claim (another host's clock ahead). Sent again at once, ahead of the node's new work, however
    much new work waits: a retry must not wait for a backlog. `announced_at` moves to now, so the next
    pass waits another interval before sending it again (a duplicate is harmless, only not free)."""
    overdue = Q(
        instance_id=instance.id,
        status=ChunkStatus.ERRORED,
        announced_at__lt=now - batch_settings().maintenance_interval,
    )
    with transaction.atomic():
        chunks = list(
            WorkChunk.objects.filter(overdue)
            .order_by("announced_at")
            .select_for_update(skip_locked=True)
            .values_list("id", "target_step_id")[:CHUNK_PAGE]
        )
        if not chunks:
            return 0
        WorkChunk.objects.filter(id__in=[chunk_id for chunk_id, _ in chunks]).update(announced_at=now)
        flow.announce_chunks(instance, chunks, again=True)
    logger.warning("job %s: %d retries were not claimed when due; sent again", instance.id, len(chunks))
    return len(chunks)


def _reannounce_lost_chunks(instance: JobInstance, now: datetime) -> int:
    lost = Q(
        instance_id=instance.id, status=ChunkStatus.QUEUED, announced_at__lt=now - batch_settings().reannounce_after
    )
    if not WorkChunk.objects.filter(lost).exists() or not _queue_is_drained(instance):
        return 0
    with transaction.atomic():
        chunks = list(
            WorkChunk.objects.filter(lost)
            .select_for_update(skip_locked=True)
            .values_list("id", "target_step_id")[:CHUNK_PAGE]
        )
        WorkChunk.objects.filter(id__in=[chunk_id for chunk_id, _ in chunks]).update(announced_at=now)
        flow.announce_chunks(instance, chunks, again=True)
    logger.warning("job %s: %d chunk announcements were lost; announced again", instance.id, len(chunks))
    return len(chunks)


def _recover_reduction(instance: JobInstance, now: datetime, report: MaintenanceReport) -> None:
    settings = batch_settings()
    lease = instance.reducer_lease_expires_at
    if lease is not None and lease >= now:
        return  # a reducer is running
    if lease is None and instance.update_time > now - settings.reannounce_after:
        return  # just reached FINALIZE: its announcement is on the way
    if instance.reducer_attempts > settings.max_chunk_retries:
        last_error = instance.error_message or "the reducer stopped renewing its lease"
        flow.fail_job(instance.id, f"Too many errors: {instance.reducer_attempts}. Last error msg was {last_error}")
        return
    if not _queue_is_drained(instance):
        return
    definition = registry.get(instance.definition_id, instance.definition_version)
    flow.announce_reduction(instance, definition.reduction_step.id, again=True)
    report.reductions_reannounced += 1


def _purge_ended(report: MaintenanceReport) -> None:
    cutoff = read_database_now() - batch_settings().purge_ended_after
    ended = list(
        JobInstance.objects.filter(end_time__lt=cutoff, status__in=ENDED_JOB_STATUSES).values_list("id", flat=True)[
            :INSTANCE_PAGE
        ]
    )
    for instance_id in ended:
        while True:
            chunk_ids = list(
                WorkChunk.objects.filter(instance_id=instance_id).values_list("id", flat=True)[:DELETE_PAGE]
            )
            if not chunk_ids:
                break
            WorkChunk.objects.filter(id__in=chunk_ids).delete()
        JobInstance.objects.filter(id=instance_id).delete()
        report.purged_instances += 1
