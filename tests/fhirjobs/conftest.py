"""Fixtures of the FHIR jobs' tests that run real workers (tests/processes.py: node_workers, wait_for_the_end)."""

from __future__ import annotations

import uuid

import pytest


@pytest.fixture
def node(settings) -> str:
    """This test's node: the jobs it starts go to this node's queue, which its workers consume; a chunk whose
    notification went missing is announced again after a second."""
    settings.NODE_ID = f"test-{uuid.uuid4().hex[:8]}"
    settings.BATCH_REANNOUNCE_AFTER_SECONDS = 1
    return settings.NODE_ID
