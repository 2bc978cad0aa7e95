"""Where a work message goes: chunk ids to the worker, no chunk id to the job's reduction."""

from __future__ import annotations

import logging
from functools import partial

from batch.connections import surviving_connection_loss
from batch.exceptions import UnknownJobDefinition
from batch.models import JobInstance
from batch.notifications import WorkNotification, announce
from batch.reduction import on_reduction_notification
from batch.registry import registry
from batch.worker import Claim, NextChunk, on_chunk_claimed, run_chunk

logger = logging.getLogger(__name__)

HAND_BACK_SECONDS = 5.0  # a message for a definition version this process lacks goes back to the queue this late


def on_work_notification(notification: WorkNotification, worker: str = "", task_id: str = "") -> dict[str, str]:
    """Entry point of a work message. An unknown definition raises (loudly); unknown work is dropped.

    A definition version this process lacks, of a job that exists, is a rolling upgrade (a job of the new
    release met by a worker of the previous one, or the reverse): nothing is claimed, so no error is charged,
    and the message goes back to the job's queue for a process that has the version (`hand_back`).

    Returns the error messages stored for the message's chunks whose run errored or failed, by chunk id.
    """
    try:
        definition = registry.get(notification.definition_id, notification.definition_version)
    except UnknownJobDefinition:
        if hand_back(notification):
            return {}
        raise
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
            claim = Claim(
                surviving_connection_loss(
                    partial(on_chunk_claimed, chunk_id, worker, task_id), f"claiming chunk {chunk_id}"
                )
            )
        chunk, claim = claim.chunk, None
        if chunk is not None:
            following = chunk_ids[position + 1] if position + 1 < len(chunk_ids) else None
            run = run_chunk(definition, chunk, None if following is None else NextChunk(following, worker, task_id))
            if run.error is not None:
                errors[str(chunk_id)] = run.error
            claim = run.next_claim
    return errors


def hand_back(notification: WorkNotification) -> bool:
    """Announce the message again, after HAND_BACK_SECONDS, on the queue of its job if the job exists with that
    definition version; False when it does not (the message is garbage, not a version this process lacks)."""
    job = (
        JobInstance.objects.filter(
            id=notification.instance_id,
            definition_id=notification.definition_id,
            definition_version=notification.definition_version,
        )
        .values("node_id", "module_id")
        .first()
    )
    if job is None:
        return False
    logger.warning(
        "job %s: this process lacks %s version %d (another release's); its work goes back to queue "
        "%s/%s for a process that has it",
        notification.instance_id,
        notification.definition_id,
        notification.definition_version,
        job["node_id"],
        job["module_id"],
    )
    announce(job["node_id"], job["module_id"], [notification], delay_seconds=HAND_BACK_SECONDS, again=True)
    return True
