"""Which job, chunk and step a worker is running, on every log line it writes meanwhile (and its node).

`chunk_in_hand` marks the running chunk (or reduction) in a context variable; `ChunkLogFilter`, installed on
the log handler (heavylift/settings.py), copies it onto each record as `job_id`, `chunk_id`, `step` and `node`,
which the JSON log format (LOG_FORMAT=json) writes as fields a log shipper can index. Threads the step starts
itself do not inherit the mark (context variables stay in their thread); their lines carry the node only.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from uuid import UUID

from django.conf import settings

_in_hand: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar("batch_chunk_in_hand", default=None)


@contextmanager
def chunk_in_hand(job_id: UUID, chunk_id: UUID | None, step_id: str) -> Iterator[None]:
    """While the block runs, this thread's log lines name the job, the chunk (None: a reduction) and the step."""
    token = _in_hand.set({"job_id": str(job_id), "chunk_id": str(chunk_id) if chunk_id else None, "step": step_id})
    try:
        yield
    finally:
        _in_hand.reset(token)


class ChunkLogFilter(logging.Filter):
    """Adds `node` to every record, and `job_id`, `chunk_id`, `step` while a chunk is in hand; drops nothing."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.node = settings.NODE_ID
        for name, value in (_in_hand.get() or {}).items():
            setattr(record, name, value)
        return True
