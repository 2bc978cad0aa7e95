"""The two state machines of the batch engine, as data: statuses and the moves allowed between them.

No database code here: `batch.transitions` makes the moves, models and every other module read these.
"""

from __future__ import annotations

from django.db import models


class JobStatus(models.TextChoices):
    QUEUED = "QUEUED"
    IN_PROGRESS = "IN_PROGRESS"
    FINALIZE = "FINALIZE"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


class ChunkStatus(models.TextChoices):
    GATE_WAITING = "GATE_WAITING"
    READY = "READY"
    QUEUED = "QUEUED"
    IN_PROGRESS = "IN_PROGRESS"
    POLL_WAITING = "POLL_WAITING"
    ERRORED = "ERRORED"
    REDUCTION_READY = "REDUCTION_READY"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"


J, C = JobStatus, ChunkStatus

JOB_TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    J.QUEUED: frozenset({J.IN_PROGRESS, J.CANCELLED}),
    J.IN_PROGRESS: frozenset({J.FINALIZE, J.COMPLETED, J.FAILED, J.CANCELLED}),
    J.FINALIZE: frozenset({J.COMPLETED, J.FAILED, J.CANCELLED}),
    J.COMPLETED: frozenset(),
    # Beyond the reference: a failed or cancelled job can be restarted where it stopped.
    J.FAILED: frozenset({J.IN_PROGRESS}),
    J.CANCELLED: frozenset({J.IN_PROGRESS}),
}

CHUNK_TRANSITIONS: dict[ChunkStatus, frozenset[ChunkStatus]] = {
    C.GATE_WAITING: frozenset({C.READY, C.REDUCTION_READY}),
    # Beyond: QUEUED -> READY when a restart re-issues a chunk whose job had stopped.
    C.READY: frozenset({C.QUEUED}),
    C.QUEUED: frozenset({C.IN_PROGRESS, C.READY}),
    # IN_PROGRESS -> IN_PROGRESS renews the lease. Beyond: -> READY when a cancel interrupts the step
    # or a restart re-issues it.
    C.IN_PROGRESS: frozenset({C.IN_PROGRESS, C.ERRORED, C.FAILED, C.COMPLETED, C.POLL_WAITING, C.READY}),
    C.POLL_WAITING: frozenset({C.READY}),
    C.ERRORED: frozenset({C.IN_PROGRESS, C.FAILED, C.COMPLETED, C.READY}),
    C.REDUCTION_READY: frozenset({C.COMPLETED, C.FAILED}),
    C.COMPLETED: frozenset(),
    C.FAILED: frozenset({C.READY}),  # beyond: restart
}

UNFINISHED_JOB_STATUSES = frozenset({J.QUEUED, J.IN_PROGRESS, J.FINALIZE})
CANCELLABLE_JOB_STATUSES = UNFINISHED_JOB_STATUSES
ENDED_JOB_STATUSES = frozenset({J.COMPLETED, J.FAILED, J.CANCELLED})
RESTARTABLE_JOB_STATUSES = frozenset({J.FAILED, J.CANCELLED})
# Chunks a worker may claim: announced and waiting, or waiting for a retry after an error.
CLAIMABLE_CHUNK_STATUSES = frozenset({C.QUEUED, C.ERRORED})
UNFINISHED_CHUNK_STATUSES = frozenset(set(C) - {C.COMPLETED, C.FAILED})


def _sources(table: dict, target) -> list[str]:
    return sorted(source for source, targets in table.items() if target in targets)


def job_statuses_leading_to(target: JobStatus) -> list[str]:
    return _sources(JOB_TRANSITIONS, target)


def chunk_statuses_leading_to(target: ChunkStatus) -> list[str]:
    return _sources(CHUNK_TRANSITIONS, target)
