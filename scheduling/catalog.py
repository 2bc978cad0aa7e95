"""Where a job name leads: the code of this process, or a custom script stored in the database."""

from __future__ import annotations

from scheduling.registry import SCRIPT_JOB_PREFIX, ScheduledJob, registry
from scheduling.scripts import find_script_job


def resolve_job(name: str) -> ScheduledJob | None:
    if name.startswith(SCRIPT_JOB_PREFIX):
        return find_script_job(name)
    return registry.get(name)
