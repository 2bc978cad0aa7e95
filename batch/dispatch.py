"""Where a work message goes: chunk ids to the worker, no chunk id to the job's reduction."""
from __future__ import annotations

from functools import partial

from batch.connections import surviving_connection_loss
from batch.notifications import WorkNotification
from batch.reduction import on_reduction_notification
from batch.registry import registry
from batch.worker import Claim, NextChunk, on_chunk_claimed, run_chunk


def on_work_notification(notification: WorkNotification, worker: str = "", task_id: str = "") -> dict[str, str]:
    """Entry point of a work message. An unknown definition raises (loudly); unknown work is dropped.

    Returns the error messages stored for the message's chunks whose run errored or failed, by chunk id.
    """
    definition = registry.get(notification.definition_id, notification.definition_version)
    if notification.chunk_id is None:
        on_reduction_notification(notification.instance_id, definition)
        return {}
    # One at a time, each claimed only when the previous one's outcome is stored (a completion claims the
    # next chunk in its own statement): the message is acknowledged after the last, so a worker lost
    # midway has it redelivered, and the chunks already done are no longer claimable.
    errors = {}
    chunk_ids = notification.chunk_ids
    claim: Claim | None = None
    for position, chunk_id in enumerate(chunk_ids):
        if claim is None:
            claim = Claim(surviving_connection_loss(partial(on_chunk_claimed, chunk_id, worker, task_id),
                                                    f"claiming chunk {chunk_id}"))
        chunk, claim = claim.chunk, None
        if chunk is not None:
            following = chunk_ids[position + 1] if position + 1 < len(chunk_ids) else None
            run = run_chunk(definition, chunk, None if following is None else NextChunk(following, worker, task_id))
            if run.error is not None:
                errors[str(chunk_id)] = run.error
            claim = run.next_claim
    return errors
