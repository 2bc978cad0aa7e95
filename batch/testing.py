"""Running batch jobs inside a test, without Celery or Redis (as `procrastinate.testing` does for its queue).

`in_process_bus()` catches the engine's work notifications where Redis would get them, after the commit,
and lets the test deliver them in its own process, one at a time or until none are left. With
`throwaway_jobs()` a test defines uniquely named job definitions that are forgotten when it ends.
`time_passes(seconds)` moves the engine's stored times into the past, as if the database's clock had run on.

    with in_process_bus() as bus, throwaway_jobs() as define_job:
        job = define_job(lambda b: b.first_step("emit", emit).last_step("count", count))
        control.start_job(job.id)
        bus.drain()
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.db.models import F

from batch.api import JobDefinition, JobDefinitionBuilder
from batch.dispatch import on_work_notification
from batch.models import JobInstance, WorkChunk
from batch.notifications import WorkNotification, use_publisher
from batch.registry import registry
from batch.statuses import ChunkStatus

__all__ = ["InProcessBus", "JobShape", "in_process_bus", "throwaway_jobs", "time_passes"]


@dataclass
class InProcessBus:
    """Stands in for Redis between the engine and a worker, so a test decides when each message arrives."""

    sent: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    # The messages of `sent` that Redis would serve ahead of new work (`announce(..., again=True)`); the
    # bus itself delivers in the order sent.
    sent_again: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    worker: str = "test-worker"  # what the chunks record as the worker that ran them
    # The delay of each delayed message of `sent`, by the message's id().
    _delays: dict[int, float] = field(default_factory=dict)

    def record(
        self, queue: str, messages: list[dict[str, Any]], delay_seconds: float = 0.0, again: bool = False
    ) -> None:
        """A delayed message (a retry's backoff) is deliverable at once: `deliver_next` delivers it as Redis
        would once its delay had passed, its chunks' retry time moved into the past by that delay (the claim
        refuses a retry before it is due by the database's clock)."""
        self.sent.extend((queue, message) for message in messages)
        if again:
            self.sent_again.extend((queue, message) for message in messages)
        if delay_seconds:
            self._delays.update((id(message), delay_seconds) for message in messages)

    def take(self) -> list[WorkNotification]:
        """Remove and return every message sent so far, undelivered (a lost message, or to deliver twice)."""
        taken = [WorkNotification.from_message(message) for _, message in self.sent]
        self.sent.clear()
        self.sent_again.clear()
        self._delays.clear()
        return taken

    def deliver(self, notification: WorkNotification) -> None:
        """Run what one message announces, as a worker's task would."""
        on_work_notification(notification, worker=self.worker)

    def deliver_next(self) -> WorkNotification:
        _, message = self.sent.pop(0)
        notification = WorkNotification.from_message(message)
        delay = self._delays.pop(id(message), 0.0)
        if delay:
            WorkChunk.objects.filter(id__in=notification.chunk_ids, status=ChunkStatus.ERRORED).update(
                announced_at=F("announced_at") - timedelta(seconds=delay)
            )
        self.deliver(notification)
        return notification

    def drain(self, limit: int = 10_000) -> int:
        """Deliver until nothing is left (the messages a delivery sends included); return how many."""
        delivered = 0
        while self.sent:
            assert delivered < limit, "the bus never drains: a message loop?"
            self.deliver_next()
            delivered += 1
        return delivered


@contextmanager
def in_process_bus() -> Iterator[InProcessBus]:
    """Work notifications go to the returned bus instead of Redis until the block ends."""
    bus = InProcessBus()
    previous = use_publisher(bus.record)
    try:
        yield bus
    finally:
        use_publisher(previous)


JobShape = Callable[[JobDefinitionBuilder], JobDefinitionBuilder]


@contextmanager
def throwaway_jobs() -> Iterator[Callable[..., JobDefinition]]:
    """`define(lambda b: b.first_step(...).last_step(...), version=1)` builds and registers a job with a
    unique id; every job so defined is unregistered when the block ends."""
    registered: list[JobDefinition] = []

    def define(shape: JobShape, version: int = 1) -> JobDefinition:
        definition = shape(JobDefinitionBuilder(f"TEST_{uuid.uuid4().hex[:8].upper()}", version)).build()
        registry.register(definition)
        registered.append(definition)
        return definition

    try:
        yield define
    finally:
        for definition in registered:
            registry.unregister(definition.id, definition.version)


@contextmanager
def time_passes(seconds: float) -> Iterator[None]:
    """`with time_passes(31): run_maintenance_pass()`: as if `seconds` had passed on the database's clock.

    The engine judges leases, announcements and poll times by PostgreSQL's `now()`, which freezegun
    cannot move; instead every time the engine stored is moved `seconds` into the past.
    """
    shift = timedelta(seconds=seconds)
    chunk_times = (
        "lease_expires_at",
        "announced_at",
        "next_poll_time",
        "update_time",
        "start_time",
        "end_time",
        "create_time",
    )
    job_times = ("reducer_lease_expires_at", "update_time", "start_time", "end_time", "create_time")
    WorkChunk.objects.update(**{name: F(name) - shift for name in chunk_times})
    JobInstance.objects.update(**{name: F(name) - shift for name in job_times})
    yield
