"""Where a step's emitted chunks go: written to PostgreSQL in batches while the step runs."""
from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any
from uuid import UUID

from django.db import connection, transaction

from batch import flow
from batch.api import JobDefinition, StepDefinition
from batch.exceptions import BatchError
from batch.models import JobInstance, WorkChunk
from batch.prepared import RELAXED_COMMIT
from batch.statuses import ChunkStatus
from batch.step_context import RunningStepContext

SINK_FLUSH_SIZE = 500  # emitted chunks written per insert: one round trip per 500 small chunks
SINK_FLUSH_BYTES = 4 * 1024 * 1024  # ...or per 4 MiB of chunk data, so large chunks keep a step's memory flat

# Emitted chunks, written in one statement per batch: arrays of ids, sequences and JSON documents
# instead of one parameter per column per row. Ids already present (a re-run re-emitting) are skipped.
INSERT_CHUNKS_SQL = """
INSERT INTO batch_workchunk (id, instance_id, definition_id, definition_version, target_step_id, sequence, status,
                             data, error_count, poll_attempts, attempts, create_time, update_time, worker, task_id)
SELECT emitted.id, %(instance_id)s, %(definition_id)s, %(definition_version)s, %(step_id)s, emitted.sequence,
       %(status)s, emitted.data::jsonb, 0, 0, 0, now(), now(), '', ''
FROM unnest(%(ids)s::uuid[], %(sequences)s::int[], %(documents)s::text[]) AS emitted(id, sequence, data),
     {relaxed_commit} AS relaxed
ON CONFLICT (id) DO NOTHING
RETURNING id
""".format(relaxed_commit=RELAXED_COMMIT)


class ChunkSink:
    """The engine's `batch.api.DataSink`: emitted chunks are written in batches as the step runs.

    The n-th chunk a chunk emits always gets the same id, so a step that is run again (after an error
    or a lost worker) re-emits the same chunks, and the copies are ignored instead of doing work twice.
    """

    def __init__(self, definition: JobDefinition, instance: JobInstance, chunk: WorkChunk, step: StepDefinition,
                 context: RunningStepContext):
        self.definition = definition
        self.instance = instance
        self.source = chunk
        self.target = definition.step_after(step.id) if step.emits else None
        self.step = step
        self.context = context
        self.emitted = 0
        self._buffer: list[tuple[UUID, int, str]] = []
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
            with transaction.atomic():
                self.flush()

    @property
    def pending(self) -> bool:
        return bool(self._buffer)

    def flush(self) -> None:
        """Write the buffered chunks; a non-gated job's are queued and announced with the commit."""
        if not self._buffer:
            return
        ids, sequences, documents = zip(*self._buffer)
        with connection.cursor() as cursor:
            cursor.execute(INSERT_CHUNKS_SQL, {
                "instance_id": self.instance.id, "definition_id": self.definition.id,
                "definition_version": self.definition.version, "step_id": self.target.id,
                "status": ChunkStatus.GATE_WAITING if self.definition.gated else ChunkStatus.READY,
                "ids": list(ids), "sequences": list(sequences), "documents": list(documents),
            })
            inserted = {str(row[0]) for row in cursor.fetchall()}  # a re-run's chunks already written are not
        if inserted and not self.definition.gated:
            flow.enqueue_ready_chunks(self.instance, only=[chunk_id for chunk_id in ids if str(chunk_id) in inserted])
        self._buffer = []
        self._buffered_bytes = 0
