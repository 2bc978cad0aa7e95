"""Where a work message goes: a chunk id to the worker, no chunk id to the job's reduction."""
from __future__ import annotations

from batch.connections import surviving_connection_loss
from batch.notifications import WorkNotification
from batch.reduction import on_reduction_notification
from batch.registry import registry
from batch.worker import on_chunk_claimed, run_chunk


def on_work_notification(notification: WorkNotification, worker: str = "", task_id: str = "") -> None:
    """Entry point of a work message. An unknown definition raises (loudly); unknown work is dropped."""
    definition = registry.get(notification.definition_id, notification.definition_version)
    if notification.chunk_id is None:
        on_reduction_notification(notification.instance_id, definition)
        return
    chunk = surviving_connection_loss(lambda: on_chunk_claimed(notification.chunk_id, worker, task_id),
                                      f"claiming chunk {notification.chunk_id}")
    if chunk is not None:
        run_chunk(definition, chunk)
