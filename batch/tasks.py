"""Celery glue of the batch engine: thin tasks that call engine functions, and the publisher."""

from __future__ import annotations

import os
from typing import Any

from celery import current_app, shared_task
from celery.signals import worker_process_init, worker_ready, worker_shutdown
from celery.utils import uuid

from batch import heartbeats
from batch.dispatch import on_work_notification
from batch.exceptions import ChunksErrored
from batch.leases import kill_this_process, lease_keeper
from batch.maintenance_watchdog import start_watchdog
from batch.notifications import WorkNotification
from batch.queues import AGAIN_PRIORITY, NEW_WORK_PRIORITY
from batch.recycling import start_pool_watchdog

PUBLISH_BATCH = 500  # Redis commands pipelined per round trip when many chunks are announced at once


# The engine owns retries: a chunk that errored is stored ERRORED and announced again after its backoff
# before this task ends. The task then raises ChunksErrored only so that Celery's task events (Flower) show
# the run as failed, with the chunks' messages: no autoretry; `acks_on_failure` acknowledges the message all
# the same (a redelivery would find nothing to claim anyway); `throws` logs it in one line, without a
# traceback (the step's own was logged when it raised).
@shared_task(
    name="batch.work_notification",
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    acks_on_failure=True,
    throws=(ChunksErrored,),
    ignore_result=True,
)
def work_notification(self, message: dict[str, Any]) -> None:
    errors = on_work_notification(
        WorkNotification.from_message(message),
        worker=f"{self.request.hostname}/{os.getpid()}",
        task_id=self.request.id or "",
    )
    if errors:
        raise ChunksErrored(errors)


def publish_work_notifications(
    queue: str, messages: list[dict[str, Any]], delay_seconds: float = 0.0, again: bool = False
) -> None:
    """Publish straight to the queue's Redis lists (anonymous exchange: no routing table to lose); work
    announced `again` at the priority served before new work (`batch.queues`).

    Built with `app.amqp`'s message functions rather than `apply_async`: a first step may announce
    thousands of chunks, and this skips the per-call option merging and routing (about 2.5 times faster).
    """
    amqp = current_app.amqp
    priority = AGAIN_PRIORITY if again else NEW_WORK_PRIORITY
    with current_app.producer_or_acquire() as producer, producer.batch(max_size=PUBLISH_BATCH):
        for message in messages:
            task_message = amqp.create_task_message(
                uuid(),
                work_notification.name,
                (message,),
                {},
                ignore_result=True,
                kwargsrepr="",
                countdown=delay_seconds or None,  # a retry's backoff: the worker holds it until then
                # what Flower shows for the task; cheaper than Celery's own repr of the message
                argsrepr=f"{message['jobDefinitionId']} {message['targetStepId']} {message.get('chunkId', 'reduction')}"
                + (f" +{len(message['followingChunkIds'])}" if "followingChunkIds" in message else ""),
            )
            amqp.send_task_message(
                producer,
                work_notification.name,
                task_message,
                exchange="",
                routing_key=queue,
                queue=queue,
                priority=priority,
            )


@worker_process_init.connect
def recycle_hung_pool_processes(**kwargs) -> None:
    """In a prefork pool process a step that overran and would not stop is ended by killing the process."""
    lease_keeper.recycle_process = kill_this_process


@worker_ready.connect
def start_node_heartbeat(sender, **kwargs) -> None:
    """In the worker's main process, once it consumes: its node counts as alive while it beats."""
    consumed = {queue.name for queue in sender.task_consumer.queues}
    heartbeats.start_heartbeat(f"{sender.hostname}/{os.getpid()}", consumed)


@worker_shutdown.connect
def stop_node_heartbeat(**kwargs) -> None:
    heartbeats.stop_heartbeat()


@worker_ready.connect
def watch_for_starved_maintenance(**kwargs) -> None:
    """Each worker's main process runs maintenance itself when the scheduled pass has not run for a while."""
    start_watchdog()


@worker_ready.connect
def watch_pool_processes_for_overruns(sender, **kwargs) -> None:
    """Each worker's main process kills a pool process whose step overran and holds on (`batch.recycling`)."""
    start_pool_watchdog(sender.hostname)
