"""Where a work message goes: chunk ids to the worker, no chunk id to the job's reduction."""
from __future__ import annotations

from functools import partial

from batch.connections import surviving_connection_loss
from batch.notifications import WorkNotification
from batch.reduction import on_reduction_notification
from batch.registry import registry
from batch.worker import on_chunk_claimed, run_chunk


def on_work_notification(notification: WorkNotification, worker: str = "", task_id: str = "") -> dict[str, str]:
    """Entry point of a work message. An unknown definition raises (loudly); unknown work is dropped.

    Returns the error messages stored for the message's chunks whose run errored or failed, by chunk id.
    """
    definition = registry.get(notification.definition_id, notification.definition_version)
    if notification.chunk_id is None:
        on_reduction_notification(notification.instance_id, definition)
        return {}
    # One at a time, each claimed only when the previous one's outcome is stored: the message is
    # acknowledged after the last, so a worker lost midway has it redelivered, and the chunks already
    # done are no longer claimable.
    errors = {}
    for chunk_id in notification.chunk_ids:
        chunk = surviving_connection_loss(partial(on_chunk_claimed, chunk_id, worker, task_id),
                                          f"claiming chunk {chunk_id}")
        if chunk is not None and (error := run_chunk(definition, chunk)) is not None:
            errors[str(chunk_id)] = error
    return errors
