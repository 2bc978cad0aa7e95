"""What a running chunk's step says it waits for (a source that is down, say): the job page's "waiting for".

A job with a chunk running looks busy, yet that chunk may be waiting out a proxy restart. The step says so
through `StepContext.say_waiting`; the note is short-lived by nature, so it is kept in Redis (the broker's),
not in the chunk's row: one hash per job, a field per chunk holding the note and when it lapses. A note lapses
on its own when its process dies mid-wait, and the step clears it when it moves on. Writing or reading a note
never fails the step or the page: Redis away, the note is logged and left out.
"""

from __future__ import annotations

import json
import logging
import math
import time
from uuid import UUID

from batch.queues import _broker_client

logger = logging.getLogger(__name__)

KEY = "batch:waiting:{job_id}"


def note_waiting(job_id: UUID, chunk: str, step_id: str, reason: str | None, for_seconds: float) -> None:
    """Say that `chunk` (its id, or the step's for a reduction) waits for `reason`, for about `for_seconds`
    unless said again; `reason` None: it does not wait any more."""
    key = KEY.format(job_id=job_id)
    try:
        client = _broker_client()
        try:
            if reason is None:
                client.hdel(key, chunk)
                return
            note = {"step": step_id, "reason": reason, "lapses": time.time() + for_seconds}
            client.hset(key, chunk, json.dumps(note))
            if client.ttl(key) < for_seconds:  # the hash outlives its longest note (no EXPIRE GT in Redis 6)
                client.expire(key, math.ceil(for_seconds))
        finally:
            client.close()
    except Exception:
        logger.warning(
            "job %s chunk %s waits for %s (not shown: the note could not be written)",
            job_id,
            chunk,
            reason,
            exc_info=True,
        )


def waiting_notes(job_id: UUID) -> list[str]:
    """The notes of the job's chunks that have not lapsed, oldest chunk id first: `chunk 1a2b3c4d of step s: …`."""
    try:
        client = _broker_client()
        try:
            fields = client.hgetall(KEY.format(job_id=job_id))
        finally:
            client.close()
    except Exception:
        logger.warning("the waiting notes of job %s could not be read", job_id, exc_info=True)
        return []
    now = time.time()
    notes = []
    for chunk, value in sorted(fields.items()):
        note = json.loads(value)
        if note["lapses"] > now:
            notes.append(f"chunk {chunk.decode()[:8]} of step {note['step']}: {note['reason']}")
    return notes
