"""Work notifications: only ids travel, on the queue of the node that owns the job, after the commit.

The message is a hint that a chunk (or a reduction) is ready; the database row is the truth. A lost
message is re-sent by maintenance, a duplicate finds nothing to claim.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from django.db import transaction

from batch.queues import work_notification_queue

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkNotification:
    instance_id: UUID
    definition_id: str
    definition_version: int
    target_step_id: str
    chunk_id: UUID | None  # None: run the job's reduction step
    # Chunks of the same step to claim and run one after the other once `chunk_id` is done: a job that
    # announces thousands of chunks at once sends one message per few chunks (see `flow.announce_chunks`).
    following_chunk_ids: tuple[UUID, ...] = ()

    @property
    def chunk_ids(self) -> list[UUID]:
        """Every chunk this message announces, in order."""
        return [] if self.chunk_id is None else [self.chunk_id, *self.following_chunk_ids]

    def to_message(self) -> dict[str, Any]:
        message = {
            "instanceId": str(self.instance_id),
            "jobDefinitionId": self.definition_id,
            "jobDefinitionVersion": self.definition_version,
            "targetStepId": self.target_step_id,
        }
        if self.chunk_id is not None:
            message["chunkId"] = str(self.chunk_id)
        if self.following_chunk_ids:
            message["followingChunkIds"] = [str(chunk_id) for chunk_id in self.following_chunk_ids]
        return message

    @classmethod
    def from_message(cls, message: Mapping[str, Any]) -> WorkNotification:
        chunk_id = message.get("chunkId")
        return cls(
            instance_id=UUID(message["instanceId"]),
            definition_id=message["jobDefinitionId"],
            definition_version=int(message["jobDefinitionVersion"]),
            target_step_id=message["targetStepId"],
            chunk_id=UUID(chunk_id) if chunk_id else None,
            following_chunk_ids=tuple(UUID(following) for following in message.get("followingChunkIds", ())),
        )


Publisher = Callable[[str, list[dict[str, Any]], float, bool], None]
"""Hands a queue's messages to the broker, to be delivered no sooner than the given seconds from now, and
(when the flag is set) ahead of the queue's new work: the Celery publisher, wired in `BatchConfig.ready()`,
or a test's in-process bus (`batch.testing`). Set at start-up, so the engine never imports Celery."""

_publisher: Publisher | None = None


def use_publisher(publisher: Publisher | None) -> Publisher | None:
    """Make `publisher` the one announcements go to; return the one it replaces."""
    global _publisher
    previous, _publisher = _publisher, publisher
    return previous


def announce(
    node_id: str,
    module_id: str,
    notifications: Iterable[WorkNotification],
    *,
    delay_seconds: float = 0.0,
    again: bool = False,
) -> None:
    """Publish once the current transaction commits (at once outside a transaction), for delivery after
    `delay_seconds` (a retry's backoff).

    `again`: this work was announced before (a retry after an error or a lost worker, a lost message, a
    job moved off a dead node), so it goes ahead of the node's new work: a retry waits for its backoff, not
    for a backlog of thousands of chunks to drain.

    A failed publish is logged, not raised: the chunk stays QUEUED and maintenance announces it again.
    """
    messages = [notification.to_message() for notification in notifications]
    if not messages:
        return
    queue = work_notification_queue(node_id, module_id)
    transaction.on_commit(lambda: _publish(queue, messages, delay_seconds, again), robust=True)


def _publish(queue: str, messages: list[dict[str, Any]], delay_seconds: float, again: bool) -> None:
    if _publisher is None:
        raise RuntimeError("no work-notification publisher: BatchConfig.ready() has not run")
    _publisher(queue, messages, delay_seconds, again)
