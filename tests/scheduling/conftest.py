import pytest

from scheduling import registry as registry_module
from scheduling.registry import JobRegistry


@pytest.fixture
def job_registry(monkeypatch) -> JobRegistry:
    """A registry of the test's own, so the jobs it declares do not leak into the process-wide one."""
    fresh = JobRegistry()
    monkeypatch.setattr(registry_module, "registry", fresh)
    return fresh
