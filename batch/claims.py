"""What a worker holds once it has claimed a chunk: frozen values, read from the claim's own statement.

Not database rows: nothing here can be saved by mistake, and nothing is half filled. Every outcome is
fenced by `claim_token` (`batch.worker`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID


@dataclass(frozen=True)
class ClaimedJob:
    """The job of a claimed chunk, as far as running the chunk and announcing work needs it."""

    id: UUID
    definition_id: str
    definition_version: int
    parameters: Mapping[str, Any]
    node_id: str
    module_id: str
    max_concurrent_chunks: int | None


@dataclass(frozen=True)
class ClaimedChunk:
    """A chunk IN_PROGRESS under the claim that drew `claim_token`."""

    id: UUID
    job: ClaimedJob
    target_step_id: str
    sequence: int
    data: Mapping[str, Any] | None
    attempts: int  # this run's: 1 on the first
    error_count: int
    poll_attempts: int
    claim_token: UUID
    worker: str = ""
    lease_expires_at: datetime | None = None  # known when maintenance finds the lease lapsed

    @property
    def instance_id(self) -> UUID:
        return self.job.id
