"""Helpers of the batch tests: a node of the test's own, and step functions to define jobs with."""

from __future__ import annotations

import uuid
from typing import Any


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
