"""Fixtures of the batch tests: a notification bus the test drives by hand, throw-away job definitions."""
from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from batch.api import JobDefinition, JobDefinitionBuilder
from batch.notifications import WorkNotification
from batch.registry import registry
from batch.worker import on_work_notification


@dataclass
class Bus:
    """Stands in for Redis between the engine and a worker, so a test decides when each message arrives.

    Messages land here only when the engine's transaction commits, exactly as they would reach Redis.
    """

    sent: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def record(self, queue: str, messages: list[dict[str, Any]]) -> None:
        self.sent.extend((queue, message) for message in messages)

    def take(self) -> list[WorkNotification]:
        taken = [WorkNotification.from_message(message) for _, message in self.sent]
        self.sent.clear()
        return taken

    def deliver_next(self) -> WorkNotification:
        _, message = self.sent.pop(0)
        notification = WorkNotification.from_message(message)
        on_work_notification(notification, worker="test-worker")
        return notification

    def drain(self, limit: int = 10_000) -> int:
        """Deliver until nothing is left (the messages a delivery sends included); return how many."""
        delivered = 0
        while self.sent:
            assert delivered < limit, "the bus never drains: a message loop?"
            self.deliver_next()
            delivered += 1
        return delivered


@pytest.fixture
def bus(monkeypatch) -> Bus:
    bus = Bus()
    monkeypatch.setattr("batch.notifications.deliver", bus.record)
    return bus


@pytest.fixture
def define_job() -> Iterator[Callable[..., JobDefinition]]:
    """`define_job(lambda b: b.first_step(...).last_step(...))` builds and registers a uniquely named job."""
    registered: list[JobDefinition] = []

    def define(shape: Callable[[JobDefinitionBuilder], JobDefinitionBuilder], version: int = 1) -> JobDefinition:
        builder = JobDefinitionBuilder(f"TEST_{uuid.uuid4().hex[:8].upper()}", version)
        definition = shape(builder).build()
        registry.register(definition)
        registered.append(definition)
        return definition

    yield define
    for definition in registered:
        registry.unregister(definition.id, definition.version)


def unique_node() -> str:
    """A node id of the test's own, so its queue holds nothing from other runs."""
    return f"test-{uuid.uuid4().hex[:8]}"


def emit(count: int, **data: Any):
    """A first step that emits `count` chunks `{"n": i, **data}`."""
    def step(context, sink) -> int:
        for n in range(count):
            sink.accept({"n": n, **data})
        return 0
    return step


def count_records(records: int = 1):
    def step(context, sink) -> int:
        return records
    return step
