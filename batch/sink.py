"""Where a step's emitted chunks go: written to PostgreSQL in batches while the step runs."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any
from uuid import UUID

from django.db import connection, transaction

from batch import flow, sql
from batch.api import JobDefinition, StepDefinition
from batch.claims import ClaimedChunk, ClaimedJob
from batch.connections import surviving_connection_loss
from batch.exceptions import BatchError, JobCancelled
from batch.statuses import ChunkStatus
from batch.step_context import RunningStepContext

SINK_FLUSH_SIZE = 500  # emitted chunks written per insert: one round trip per 500 small chunks
SINK_FLUSH_BYTES = 4 * 1024 * 1024  # ...or per 4 MiB of chunk data, so large chunks keep a step's memory flat


class ChunkSink:
    """The engine's `batch.api.DataSink`: emitted chunks are written in batches as the step runs.

    The n-th chunk a chunk emits always gets the same id, so a step that is run again (after an error
    or a lost worker) re-emits the same chunks, and the copies are ignored instead of doing work twice.

    A batch leaves the buffer only when the transaction that wrote it commits: a write rolled back by a
    lost connection (PostgreSQL restarting) is written again by the retry, never silently dropped.
    """

    def __init__(
        self,
        definition: JobDefinition,
        instance: ClaimedJob,
        chunk: ClaimedChunk,
        step: StepDefinition,
        context: RunningStepContext,
    ):
        self.definition = definition
        self.instance = instance
        self.source = chunk
        self.target = definition.step_after(step.id) if step.emits else None
        self.step = step
        self.context = context
        self.emitted = 0
        self._buffer: list[tuple[UUID, int, str]] = []  # (id, sequence, document), in sequence order
        self._buffered_bytes = 0

    def accept(self, data: Mapping[str, Any]) -> None:
        if self.target is None:
            raise BatchError(f"step {self.step.id!r} is the last step of {self.definition.id}: it cannot emit chunks")
        self.context.check_cancelled()
        document = json.dumps(data)
        self._buffer.append((uuid.uuid5(self.source.id, str(self.emitted)), self.emitted, document))
        self._buffered_bytes += len(document)
        self.emitted += 1
        if len(self._buffer) >= SINK_FLUSH_SIZE or self._buffered_bytes >= SINK_FLUSH_BYTES:
            # A mid-step batch outlives a database restart like an outcome does: the step is not charged for it.
            owned = surviving_connection_loss(
                self._flush_committed, f"writing the chunks emitted by chunk {self.source.id}"
            )
            if not owned:
                self.context.lease.lost = True  # the step sees a cancel from now on; its outcome will not count
                raise JobCancelled(f"chunk {self.source.id} is no longer this worker's: step {self.step.id} stops")

    def _flush_committed(self) -> bool:
        with transaction.atomic():
            return self.flush()

    @property
    def pending(self) -> bool:
        return bool(self._buffer)

    def flush(self) -> bool:
        """Write the buffered chunks; a non-gated job's are queued and announced with the commit.

        False when the source chunk is no longer this claim's (nothing is written). The written batch is
        dropped from the buffer when the surrounding transaction commits, not before.
        """
        if not self._buffer:
            return True
        ids, sequences, documents = zip(*self._buffer)
        with connection.cursor() as cursor:
            cursor.execute(
                sql.INSERT_CHUNKS,
                {
                    "source_id": self.source.id,
                    "in_progress": ChunkStatus.IN_PROGRESS,
                    "claim_token": self.source.claim_token,
                    "instance_id": self.instance.id,
                    "definition_id": self.definition.id,
                    "definition_version": self.definition.version,
                    "step_id": self.target.id,
                    "status": ChunkStatus.GATE_WAITING if self.definition.gated else ChunkStatus.READY,
                    "ids": list(ids),
                    "sequences": list(sequences),
                    "documents": list(documents),
                },
            )
            owned, inserted_ids = cursor.fetchone()
        if not owned:
            return False
        inserted = {str(chunk_id) for chunk_id in inserted_ids}  # a re-run's chunks already written are not
        if inserted and not self.definition.gated:
            flow.enqueue_ready_chunks(self.instance, only=[chunk_id for chunk_id in ids if str(chunk_id) in inserted])
        written_through = sequences[-1]
        transaction.on_commit(lambda: self._forget_through(written_through))
        return True

    def _forget_through(self, sequence: int) -> None:
        """Drop the committed batches (up to and including `sequence`) from the buffer."""
        kept = [entry for entry in self._buffer if entry[1] > sequence]
        self._buffer = kept
        self._buffered_bytes = sum(len(document) for _, _, document in kept)
