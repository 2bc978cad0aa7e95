"""Local jobs: every worker process runs its own, on a timer thread, never through the shared queue.

A local job looks after state that lives in one process (an in-memory cache, say), so every process must
run it; a message on a queue would reach only one of them. The runner thread starts in each pool process of
every worker on a node with JOB_SCHEDULING=true. Which local jobs are on comes from their PeriodicTask rows,
re-read whenever django-celery-beat's change marker moves (a pause in the admin, a script uploaded).
Local runs are logged, not recorded in JobRun: there would be one row per process per tick.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime

from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone
from django_celery_beat.models import PeriodicTasks

from scheduling.catalog import resolve_job
from scheduling.exceptions import SchedulingError
from scheduling.registry import SCRIPT_JOB_PREFIX, RunContext, ScheduledJob, running
from scheduling.runs import execute
from scheduling.sync import enabled_local_job_names

logger = logging.getLogger(__name__)

POLL_SECONDS = 2.0  # how soon a process notices a local job added, changed, paused or removed
MIN_SLEEP_SECONDS = 0.05  # never spin, even when a tick is due in a microsecond


def load_enabled_local_jobs() -> list[ScheduledJob]:
    """The local jobs enabled in the PeriodicTask rows, as this process's code or the stored scripts define them."""
    jobs = []
    for name in enabled_local_job_names():
        if name.startswith(SCRIPT_JOB_PREFIX) and not settings.CUSTOM_SCRIPTS_ENABLED:
            continue  # switched off on this node: not run, and nothing to warn about
        try:
            job = resolve_job(name)
        except SchedulingError as exc:
            logger.error("local job %s cannot be loaded: %s", name, exc)
            continue
        if job is None or job.clustered:
            logger.warning("local job %s is not declared as a local job in this process's code or scripts", name)
            continue
        jobs.append(job)
    return jobs


class LocalJobRunner:
    """Runs the due local jobs of this process, one after the other, on its own thread."""

    def __init__(
        self,
        load_jobs: Callable[[], list[ScheduledJob]] = load_enabled_local_jobs,
        change_marker: Callable[[], object] = PeriodicTasks.last_change,
        poll_seconds: float = POLL_SECONDS,
    ):
        self._load_jobs = load_jobs
        self._change_marker = change_marker
        self._poll_seconds = poll_seconds
        self._jobs: dict[str, ScheduledJob] = {}
        self._last_ticks: dict[str, datetime] = {}
        self._marker: object = object()  # matches no marker, so the first refresh loads
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def refresh(self, now: datetime) -> None:
        """Reload the jobs if the schedule changed. A job new to this process waits for its next tick."""
        marker = self._change_marker()
        if marker == self._marker:
            return
        self._jobs = {job.name: job for job in self._load_jobs()}
        self._last_ticks = {
            name: self._last_ticks.get(name) or job.schedule.latest_tick_at_or_before(now)
            for name, job in self._jobs.items()
        }
        self._marker = marker

    def run_due(self, now: datetime) -> list[str]:
        """Run each job whose tick has come since its last run (once, however many ticks passed)."""
        ran = []
        for name, job in self._jobs.items():
            tick = job.schedule.latest_tick_at_or_before(now)
            if tick <= self._last_ticks[name]:
                continue
            self._last_ticks[name] = tick
            with running(RunContext(name, tick, clustered=False)):
                try:
                    execute(job)
                except Exception:
                    logger.exception("local job %s @ %s failed", name, tick.isoformat())
            ran.append(name)
        return ran

    def seconds_until_next_tick(self, now: datetime) -> float:
        upcoming = [job.schedule.next_tick_after(now) for job in self._jobs.values()]
        return min(((tick - now).total_seconds() for tick in upcoming), default=self._poll_seconds)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="local-scheduled-jobs", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        next_poll = 0.0
        while not self._stop.is_set():
            try:
                close_old_connections()
                if time.monotonic() >= next_poll:
                    self.refresh(timezone.now())
                    next_poll = time.monotonic() + self._poll_seconds
                self.run_due(timezone.now())
                wait = min(next_poll - time.monotonic(), self.seconds_until_next_tick(timezone.now()))
            except Exception:
                logger.exception("local job runner: will retry in %s s", self._poll_seconds)
                wait = self._poll_seconds
            self._stop.wait(max(wait, MIN_SLEEP_SECONDS))


_runner: LocalJobRunner | None = None


def start_local_job_runner() -> LocalJobRunner:
    """Start this process's runner (once); called in every worker pool process."""
    global _runner
    if _runner is None:
        _runner = LocalJobRunner()
        _runner.start()
        logger.info("local scheduled jobs run in this process")
    return _runner
