"""Celery tasks of the benchmarks (workers load them with `-I bench.tasks`): bare Celery, the engine's baseline."""

import time

from celery import current_app, shared_task

PUBLISH_BATCH = 500  # Redis commands pipelined per round trip, as the engine's publisher


@shared_task(name="bench.noop", acks_late=True, ignore_result=True)
def noop(index: int) -> None:
    """Nothing: what remains is the cost of Celery and Redis themselves."""


@shared_task(name="bench.sleep", acks_late=True, ignore_result=True)
def sleep(index: int, milliseconds: int) -> None:
    """Waiting on IO, as a chunk that calls another service: the cluster benchmark's baseline."""
    time.sleep(milliseconds / 1000)


def publish_noops(queue: str, count: int) -> None:
    with current_app.producer_or_acquire() as producer, producer.batch(max_size=PUBLISH_BATCH):
        for index in range(count):
            noop.apply_async((index,), queue=queue, exchange="", routing_key=queue, producer=producer)


def publish_sleeps(queue: str, count: int, milliseconds: int) -> None:
    with current_app.producer_or_acquire() as producer, producer.batch(max_size=PUBLISH_BATCH):
        for index in range(count):
            sleep.apply_async((index, milliseconds), queue=queue, exchange="", routing_key=queue, producer=producer)


def wait_until_consumed(queue: str, timeout: float) -> None:
    """Returns once a worker answers a round trip through `queue`."""
    current_app.send_task("heavylift.ping", queue=queue, ignore_result=False).get(timeout=timeout)
