"""`@scheduled`: how code (and custom scripts) declare the jobs the scheduler runs.

Declaring a job only records it here. At start-up the declared jobs are synced into django-celery-beat's
`PeriodicTask` rows (see `scheduling.sync`); the rows are what beat schedules and the admin pauses.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from django.conf import settings

from scheduling.exceptions import InvalidJobDeclaration
from scheduling.schedules import Schedule, make_schedule

JobFunction = TypeVar("JobFunction", bound=Callable[[], object])

SCRIPT_JOB_PREFIX = "scripts."  # names of jobs that come from custom scripts; code jobs may not use it
MAX_NAME_LENGTH = 200  # PeriodicTask.name
_NAME = re.compile(r"^[A-Za-z0-9_.:-]+$")


@dataclass(frozen=True)
class ScheduledJob:
    name: str
    function: Callable[[], object]
    schedule: Schedule
    clustered: bool
    transactional: bool


@dataclass(frozen=True)
class RunContext:
    """What a running job may want to know, e.g. its tick as an idempotency key."""

    job_name: str
    tick: datetime
    clustered: bool


class JobRegistry:
    """The jobs this process's code declares, by name."""

    def __init__(self) -> None:
        self._jobs: dict[str, ScheduledJob] = {}

    def add(self, job: ScheduledJob) -> None:
        existing = self._jobs.get(job.name)
        if existing and _origin(existing.function) != _origin(job.function):
            raise InvalidJobDeclaration(
                f"two scheduled jobs are named {job.name!r}: {_origin(existing.function)} and {_origin(job.function)}"
            )
        self._jobs[job.name] = job

    def get(self, name: str) -> ScheduledJob | None:
        return self._jobs.get(name)

    def all(self) -> list[ScheduledJob]:
        return sorted(self._jobs.values(), key=lambda job: job.name)


registry = JobRegistry()


@dataclass
class _ScriptCollector:
    prefix: str
    jobs: list[ScheduledJob]


_collector: ContextVar[_ScriptCollector | None] = ContextVar("scheduling_script_collector", default=None)
_current_run: ContextVar[RunContext | None] = ContextVar("scheduling_current_run", default=None)


def scheduled(
    cron: str | None = None,
    *,
    every_seconds: int | None = None,
    clustered: bool = True,
    name: str | None = None,
    transactional: bool = False,
    timezone: str | None = None,
) -> Callable[[JobFunction], JobFunction]:
    """Declare a function as a scheduled job; it is called with no arguments.

    `cron`: 5 fields, or 6 with seconds first as in Spring (`"0 0 1 * * ?"`), in `timezone` (default
    TIME_ZONE). `every_seconds`: a fixed interval instead. `clustered=True`: each occurrence runs once in
    the whole cluster; `clustered=False`: a local job, run by every worker process on its own.
    `name`: defaults to the function's dotted path. `transactional=True`: runs inside `transaction.atomic()`.
    """
    schedule = make_schedule(cron, every_seconds, timezone or settings.TIME_ZONE)
    for flag_name, flag in (("clustered", clustered), ("transactional", transactional)):
        if not isinstance(flag, bool):
            raise InvalidJobDeclaration(f"{flag_name} must be True or False, got {flag!r}")

    def declare(function: JobFunction) -> JobFunction:
        collector = _collector.get()
        job_name = _job_name(function, name, collector)
        job = ScheduledJob(job_name, function, schedule, clustered, transactional)
        if collector is not None:
            if any(other.name == job_name for other in collector.jobs):
                raise InvalidJobDeclaration(f"two scheduled jobs in this script are named {job_name!r}")
            collector.jobs.append(job)
        else:
            registry.add(job)
        return function

    return declare


def current_run() -> RunContext | None:
    """The job run this code is part of, or None outside a scheduled run."""
    return _current_run.get()


@contextmanager
def running(context: RunContext) -> Iterator[None]:
    token = _current_run.set(context)
    try:
        yield
    finally:
        _current_run.reset(token)


@contextmanager
def collecting_script_jobs(script_name: str) -> Iterator[list[ScheduledJob]]:
    """While a custom script loads, its `@scheduled` functions are collected here, not registered globally."""
    collector = _ScriptCollector(prefix=f"{SCRIPT_JOB_PREFIX}{script_name}.", jobs=[])
    token = _collector.set(collector)
    try:
        yield collector.jobs
    finally:
        _collector.reset(token)


def _job_name(function: Callable, explicit: str | None, collector: _ScriptCollector | None) -> str:
    if explicit is not None and not isinstance(explicit, str):
        raise InvalidJobDeclaration(f"name must be a string, got {explicit!r}")
    if not callable(function):
        raise InvalidJobDeclaration(f"@scheduled decorates a function, not {function!r}")
    required = [
        parameter.name
        for parameter in inspect.signature(function).parameters.values()
        if parameter.default is parameter.empty
        and parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)
    ]
    if required:
        raise InvalidJobDeclaration(
            f"a scheduled job is called with no arguments, but {function.__qualname__} requires {', '.join(required)}"
        )
    if "<locals>" in function.__qualname__ and explicit is None:
        raise InvalidJobDeclaration(
            f"{function.__qualname__} is defined inside another function: other processes cannot find it by "
            "name; declare it at module level or give it name=..."
        )
    if collector is not None:
        job_name = collector.prefix + (explicit or function.__qualname__)
    else:
        job_name = explicit or f"{function.__module__}.{function.__qualname__}"
        if job_name.startswith(SCRIPT_JOB_PREFIX):
            raise InvalidJobDeclaration(f"job names starting with {SCRIPT_JOB_PREFIX!r} are kept for custom scripts")
    if not _NAME.match(job_name) or len(job_name) > MAX_NAME_LENGTH:
        raise InvalidJobDeclaration(f"job name {job_name!r} must be 1-{MAX_NAME_LENGTH} letters, digits and . _ : -")
    return job_name


def _origin(function: Callable) -> str:
    return f"{function.__module__}.{function.__qualname__}"
