"""What a running step sees of the engine: the `batch.api.StepContext` it is given."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from django.db import DatabaseError, connection
from django.db.models import Q

from batch import waiting
from batch.connections import is_connection_loss
from batch.exceptions import JobCancelled
from batch.leases import Lease
from batch.models import JobInstance
from batch.statuses import ENDED_JOB_STATUSES

CANCEL_CHECK_SECONDS = 1.0  # a step learns of a cancel within about this, at one query per interval


@dataclass
class RunningStepContext:
    """The engine's `batch.api.StepContext`."""

    instance_id: UUID
    step_id: str
    chunk_id: UUID | None
    parameters: Mapping[str, Any]
    data: Mapping[str, Any] | None
    lease: Lease
    attempt: int = 1
    warnings: list[str] = field(default_factory=list)
    _cancelled: bool = False
    _checked_at: float = float("-inf")

    def is_cancelled(self) -> bool:
        if self._cancelled or self.lease.lost:
            return True
        if time.monotonic() - self._checked_at >= CANCEL_CHECK_SECONDS:
            self._checked_at = time.monotonic()
            try:
                self._cancelled = self.job_is_stopped()
            except DatabaseError as error:
                # The database is away (a restart): not a reason to stop the step; ask again next interval.
                if connection.in_atomic_block or not is_connection_loss(error):
                    raise
                connection.close()
        return self._cancelled

    def job_is_stopped(self) -> bool:
        """Asked of the database now: is the job cancelled or over?"""
        return JobInstance.objects.filter(
            Q(cancelled=True) | Q(status__in=ENDED_JOB_STATUSES), id=self.instance_id
        ).exists()

    def check_cancelled(self) -> None:
        if self.is_cancelled():
            raise JobCancelled(f"job {self.instance_id} was cancelled; step {self.step_id} stops")

    def report_progress(self) -> None:
        self.lease.report_progress()

    def add_warning(self, message: str) -> None:
        self.warnings.append(message)

    def say_waiting(self, reason: str | None, for_seconds: float = 60.0) -> None:
        waiting.note_waiting(self.instance_id, str(self.chunk_id or self.step_id), self.step_id, reason, for_seconds)
