"""Fixtures of the batch tests (the `bus` and `define_job` fixtures come from `batch.testing`, in tests/conftest.py;
helpers are in tests/batch/helpers.py)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def fresh_dashboard_minutes():
    """The dashboard keeps settled minutes' throughput per process; each test's rows are its own."""
    from batch.dashboard import settled_minutes

    settled_minutes.forget()
    yield
    settled_minutes.forget()
