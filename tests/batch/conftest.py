"""Helpers of the batch tests (the `bus` and `define_job` fixtures come from `batch.testing`, in tests/conftest.py)."""
from __future__ import annotations

import uuid
from typing import Any

import pytest




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


@pytest.fixture(autouse=True)
def fresh_dashboard_minutes():
    """The dashboard keeps settled minutes' throughput per process; each test's rows are its own."""
    from batch.dashboard import settled_minutes

    settled_minutes.forget()
    yield
    settled_minutes.forget()
