"""Nodes: moving the jobs of a node that has no live batch worker to one that has.

A job is pinned to the queue of its node (as the reference's per-node queues): the starting process's
node, or, when that has no live batch worker (a web-only host), a live node chosen at kick-off
(`heartbeats.node_for_new_job`). A node is logical: every machine of it consumes its queue, so a dead
machine costs only its chunks' leases. If a whole node dies, or a job was started with no live node at
all, nothing consumes its queue and the job would wait forever. So every batch worker records a heartbeat (`batch.heartbeats`, on PostgreSQL's clock);
a node none of whose workers has beaten for `BATCH_NODE_TIMEOUT_SECONDS` is dead,
and maintenance moves its unfinished jobs to a live node of the same module, announces their waiting
chunks on that node's queue and records the move, which the job's warnings show. Operators move jobs
by hand with `manage.py reassign_jobs`; a job they force to a node with no live worker stays there until
that node's workers have beaten (maintenance does not move it back).

The timeout is also the grace period of a restart: a node whose workers come back within it keeps its
jobs. A job younger than the timeout is never moved, so a node that has not beaten *yet* (the job was
started the moment its workers came up) is not taken for dead.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from uuid import UUID

from django.db import connection, transaction
from django.db.models import Count, F, Q
from django.db.models.functions import Now

from batch import flow, sql
from batch.conf import batch_settings
from batch.exceptions import BatchError, JobNotFound, JobStateConflict, NoLiveNode
from batch.heartbeats import forget_departed_workers, live_nodes
from batch.models import JobInstance, JobReassignment, WorkChunk
from batch.queues import discard_notifications, work_notification_queue
from batch.registry import registry
from batch.statuses import UNFINISHED_JOB_STATUSES, ChunkStatus, JobStatus

logger = logging.getLogger(__name__)

JOB_PAGE = 100  # jobs moved per page; maintenance moves at most this many per pass
ANNOUNCE_PAGE = 1000  # waiting chunks announced per transaction on the new node's queue
NODE_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"  # as NODE_ID itself: it names a queue


@dataclass(frozen=True)
class Reassignment:
    """One job moved to another node's queue."""

    job_id: UUID
    module_id: str
    from_node_id: str
    to_node_id: str
    announced_chunks: int  # waiting chunks announced on the new node's queue


# --- Moving jobs ----------------------------------------------------------------------------------------
def rehome_stranded_jobs() -> int:
    """The maintenance part: move the unfinished jobs of dead nodes to live ones; forget long-gone workers.

    Returns the number of jobs moved. Jobs whose module has no live node at all stay: there is nowhere
    better to put them, and they move as soon as a node comes up.
    """
    timeout = batch_settings().node_timeout
    forget_departed_workers()
    with connection.cursor() as cursor:
        cursor.execute(
            sql.STRANDED_JOBS, {"unfinished": sorted(UNFINISHED_JOB_STATUSES), "timeout": timeout, "limit": JOB_PAGE}
        )
        stranded = cursor.fetchall()
    if not stranded:
        return 0
    targets = _TargetPicker(module_id for _, _, module_id in stranded)
    moved = 0
    for job_id, node_id, module_id in stranded:
        target = targets.pick(module_id, excluding=node_id)
        if target is None:
            continue  # the live node stopped between the two queries: the next pass decides again
        reason = (
            f"no batch worker of node {node_id} seen for {timeout.total_seconds():.0f}s (BATCH_NODE_TIMEOUT_SECONDS)"
        )
        try:
            moved += _move_job(job_id, node_id, target, reason) is not None
        except Exception:
            logger.exception("job %s: moving it from dead node %s failed; the next pass tries again", job_id, node_id)
    for node_id, module_id in sorted({(node_id, module_id) for _, node_id, module_id in stranded}):
        _discard_stale_queue(node_id, module_id)
    return moved


def _discard_stale_queue(node_id: str, module_id: str) -> None:
    """Once a dead node has no unfinished job left, its queue's messages are stale (their chunks were announced
    again where the jobs went): delete them instead of leaving them on the broker forever. While a job stays
    (too young to move, or of a module no live node runs), so does the queue."""
    if JobInstance.objects.filter(node_id=node_id, module_id=module_id, status__in=UNFINISHED_JOB_STATUSES).exists():
        return
    try:
        discarded = discard_notifications(work_notification_queue(node_id, module_id))
    except Exception:  # Redis away: the messages stay stale a while longer, harmless (they find nothing to claim)
        logger.exception("node %s: deleting its stale queue failed", node_id)
        return
    if discarded:
        logger.warning(
            "node %s (module %s) is dead and has no job left: %d stale messages deleted from its queue",
            node_id,
            module_id,
            discarded,
        )


def reassign_jobs(
    *, from_node: str | None = None, to_node: str | None = None, job_id: UUID | str | None = None, force: bool = False
) -> list[Reassignment]:
    """Move unfinished jobs to another node's queue: those of `from_node`, or the one job `job_id` (or
    that job only if it is on `from_node`), to `to_node` or else to the least busy other live node.

    `BatchError` for a call that names nothing to move or an invalid node id; `JobNotFound` /
    `JobStateConflict` for an unknown or ended job, or one not on `from_node`; `NoLiveNode` when
    `to_node` has no live worker (unless `force`) or no other node has one. Nothing moves on an error.
    """
    if from_node is None and job_id is None:
        raise BatchError("name the jobs to move: a node to move them from, or a job id")
    for name, node in (("from", from_node), ("to", to_node)):
        if node is not None and not re.match(NODE_ID_PATTERN, node):
            raise BatchError(f"invalid {name} node {node!r}: 1-64 letters, digits, '-' or '_'")
    if from_node is not None and from_node == to_node:
        raise BatchError(f"the jobs are on node {from_node} already")
    jobs = JobInstance.objects.filter(status__in=UNFINISHED_JOB_STATUSES)
    if job_id is not None:
        instance = JobInstance.objects.filter(id=_job_uuid(job_id)).first()
        if instance is None:
            raise JobNotFound(f"no job instance {job_id}")
        if instance.status not in UNFINISHED_JOB_STATUSES:
            raise JobStateConflict(f"job {instance.id} has ended ({instance.status}): there is nothing to move")
        if from_node is not None and instance.node_id != from_node:
            raise JobStateConflict(f"job {instance.id} is on node {instance.node_id}, not on node {from_node}")
        if instance.node_id == to_node:
            raise JobStateConflict(f"job {instance.id} is on node {to_node} already")
        jobs = jobs.filter(id=instance.id)
        from_node = instance.node_id
    if from_node is not None:
        jobs = jobs.filter(node_id=from_node)
    modules = sorted(set(jobs.values_list("module_id", flat=True).distinct()))
    targets = _TargetPicker(modules)
    for module_id in modules:
        if to_node is not None:
            if not force and not targets.is_live(to_node, module_id):
                raise NoLiveNode(
                    f"node {to_node} has no batch worker of module {module_id} seen in the last "
                    f"{batch_settings().node_timeout.total_seconds():.0f}s; force the move to "
                    "send the jobs there anyway"
                )
        elif not targets.has_live_node(module_id, excluding=from_node):
            raise NoLiveNode(
                f"no {'other ' if from_node else ''}node has a live batch worker of module "
                f"{module_id}; name a node to move the jobs to"
            )
    moves = []
    for job in _paged(jobs):
        target = to_node or targets.pick(job.module_id, excluding=from_node)
        forced = not targets.is_live(target, job.module_id)  # only `force` gets here with a node not live
        reason = (
            "reassigned by an operator, forced to a node with no live worker: it keeps the job until its "
            "workers come up"
            if forced
            else "reassigned by an operator"
        )
        move = _move_job(job.id, job.node_id, target, reason, forced=forced)
        if move is not None:
            moves.append(move)
    return moves


def _job_uuid(job_id: UUID | str) -> UUID | None:
    try:
        return UUID(str(job_id))
    except ValueError:
        return None


class _TargetPicker:
    """Chooses a live node for each moved job: the one with the fewest unfinished jobs, then by node
    id (deterministic), counting each job as it is given out, so a dead node's jobs spread out."""

    def __init__(self, module_ids) -> None:
        modules = set(module_ids)
        self._live = {module: [node.node_id for node in live_nodes(module)] for module in modules}
        candidates = [node for nodes in self._live.values() for node in nodes]
        self._load = Counter(
            {
                (row["node_id"], row["module_id"]): row["jobs"]
                for row in JobInstance.objects.filter(
                    status__in=UNFINISHED_JOB_STATUSES, node_id__in=candidates, module_id__in=modules
                )
                .values("node_id", "module_id")
                .annotate(jobs=Count("*"))
                .order_by()
            }
        )

    def is_live(self, node_id: str, module_id: str) -> bool:
        return node_id in self._live.get(module_id, [])

    def has_live_node(self, module_id: str, excluding: str | None = None) -> bool:
        return any(node != excluding for node in self._live.get(module_id, []))

    def pick(self, module_id: str, excluding: str | None = None) -> str | None:
        nodes = [node for node in self._live.get(module_id, []) if node != excluding]
        if not nodes:
            return None
        chosen = min(nodes, key=lambda node: (self._load[node, module_id], node))
        self._load[chosen, module_id] += 1
        return chosen


def _move_job(job_id: UUID, from_node: str, to_node: str, reason: str, *, forced: bool = False) -> Reassignment | None:
    """Re-point the job at `to_node` (if it is still unfinished on `from_node`) and announce its waiting
    work there. None when another process moved or ended it first. `forced`: an operator's move to a node
    with no live worker, which maintenance does not undo (`batch.sql.STRANDED_JOBS`)."""
    with transaction.atomic():
        moved = JobInstance.objects.filter(id=job_id, node_id=from_node, status__in=UNFINISHED_JOB_STATUSES).update(
            node_id=to_node, update_time=Now()
        )
        if not moved:
            return None
        JobReassignment.objects.create(
            instance_id=job_id, from_node_id=from_node, to_node_id=to_node, reason=reason[:500], forced=forced
        )
    instance = JobInstance.objects.get(id=job_id)
    announced = _announce_waiting_work(instance)
    logger.warning(
        "job %s moved from node %s to node %s (%s); %d waiting chunks announced there",
        job_id,
        from_node,
        to_node,
        reason,
        announced,
    )
    return Reassignment(job_id, instance.module_id, from_node, to_node, announced)


def _announce_waiting_work(instance: JobInstance) -> int:
    """Announce on the job's (new) queue what waits for a worker: QUEUED and ERRORED chunks, and a
    FINALIZE job's reduction when no reducer holds its lease. Running chunks stay with their workers;
    if those died, their leases lapse and maintenance retries them on the new queue. Page by page, so
    a job with a million queued chunks costs bounded memory; a page lost to a crash is re-announced by
    maintenance's lost-message recovery.

    Retries and the reduction go ahead of the new node's new work; never-run chunks queue behind it, as
    new work does, so a large moved backlog cannot hold up that node's own retries. A retry keeps its
    backoff: it is announced for the moment it is due (its `announced_at`, on the database's clock), which
    is left as it is."""
    announced = 0
    after = None
    while True:
        waiting = WorkChunk.objects.filter(
            instance_id=instance.id, status__in=[ChunkStatus.QUEUED, ChunkStatus.ERRORED]
        )
        if after is not None:
            waiting = waiting.filter(id__gt=after)
        with transaction.atomic():
            page = list(
                waiting.order_by("id")
                .select_for_update(skip_locked=True)
                .annotate(due_in=F("announced_at") - Now())
                .values_list("id", "target_step_id", "status", "due_in")[:ANNOUNCE_PAGE]
            )
            queued = [(chunk_id, step_id) for chunk_id, step_id, status, _ in page if status == ChunkStatus.QUEUED]
            WorkChunk.objects.filter(id__in=[chunk_id for chunk_id, _ in queued]).update(announced_at=Now())
            flow.announce_chunks(instance, queued)
            for chunk_id, step_id, status, due_in in page:
                if status == ChunkStatus.ERRORED:
                    delay = max(due_in.total_seconds(), 0.0) if due_in is not None else 0.0
                    flow.announce_chunks(instance, [(chunk_id, step_id)], delay, again=True)
        announced += len(page)
        if len(page) < ANNOUNCE_PAGE:
            break
        after = page[-1][0]
    reducer_free = Q(reducer_lease_expires_at__isnull=True) | Q(reducer_lease_expires_at__lt=Now())
    if JobInstance.objects.filter(reducer_free, id=instance.id, status=JobStatus.FINALIZE).exists():
        definition = registry.get(instance.definition_id, instance.definition_version)
        flow.announce_reduction(instance, definition.reduction_step.id, again=True)
    return announced


def _paged(jobs) -> Iterator[JobInstance]:
    after = None
    while True:
        page = jobs.order_by("id")
        if after is not None:
            page = page.filter(id__gt=after)
        instances = list(page.only("id", "node_id", "module_id")[:JOB_PAGE])
        yield from instances
        if len(instances) < JOB_PAGE:
            return
        after = instances[-1].id
