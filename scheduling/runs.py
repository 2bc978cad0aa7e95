"""One occurrence of a clustered job runs on exactly one process in the cluster.

Beat may send an occurrence twice (two beats) and Redis may deliver a message twice; the guard is a row
per (job, tick) in Postgres, inserted with ON CONFLICT DO NOTHING before the work starts: whoever inserts
it runs the job. A partial unique index allows one `running` row per job, so a run still going when the
next tick comes makes that tick `skipped` instead of overlapping. A message that arrives once the next tick
has come is `missed` (the newer tick runs instead: one catch-up run at most, never a storm).
"""

from __future__ import annotations

import enum
import logging
import os
import socket
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.db.models.functions import Now

from scheduling.clock import database_now
from scheduling.exceptions import UnknownJob
from scheduling.models import JobRun, RunOutcome
from scheduling.registry import RunContext, ScheduledJob, running
from scheduling.schedules import Schedule, is_stale

logger = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 5.0  # how often a running job shows its process is alive
ABANDONED_AFTER = timedelta(seconds=30)  # six heartbeats missed: the process is gone (killed, machine lost)
PRUNE_BATCH = 1000  # rows deleted per statement, so pruning never holds long locks

# The outcome state machine: a run is inserted as running, skipped or missed; only running moves on.
TRANSITIONS: dict[str, frozenset[str]] = {
    RunOutcome.RUNNING: frozenset({RunOutcome.SUCCEEDED, RunOutcome.FAILED, RunOutcome.ABANDONED}),
}
INITIAL_OUTCOMES = frozenset({RunOutcome.RUNNING, RunOutcome.SKIPPED, RunOutcome.MISSED})


class Occurrence(enum.StrEnum):
    """What this process did with one message for one tick."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"  # the job was still running from an earlier tick
    MISSED = "missed"  # the next tick had come before the message was taken
    TAKEN = "taken"  # another process had the tick already
    NOT_SCHEDULED = "not scheduled"  # paused, removed, or its script disabled


def process_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def run_occurrence(
    job_name: str,
    schedule: Schedule | None,
    tick: datetime,
    resolve: Callable[[str], ScheduledJob | None],
    is_enabled: Callable[[str], bool],
    on_demand: bool = False,
) -> Occurrence:
    """Run `job_name` for `tick` unless another process has it, it is paused, still running, or stale.

    `on_demand` (an operator's "run now"): the tick is the moment of the click, not a point on the schedule;
    it runs even while the job is paused, still exactly once and never beside a run of the same job."""
    if not on_demand and not is_enabled(job_name):
        logger.info("%s @ %s: not run, the job is paused or no longer declared", job_name, tick)
        return Occurrence.NOT_SCHEDULED
    if not on_demand and is_stale(schedule, tick, database_now()):  # never the host's clock: hosts disagree
        recorded = _insert_run(job_name, tick, RunOutcome.MISSED)
        return Occurrence.MISSED if recorded else Occurrence.TAKEN
    abandon_silent_runs(job_name)
    run_id = _insert_run(job_name, tick, RunOutcome.RUNNING)
    if run_id is None:
        if JobRun.objects.filter(job_name=job_name, tick=tick).exists():
            return Occurrence.TAKEN
        skipped = _insert_run(job_name, tick, RunOutcome.SKIPPED)
        if skipped:
            logger.warning("%s @ %s: skipped, the previous run is still going", job_name, tick)
        return Occurrence.SKIPPED if skipped else Occurrence.TAKEN
    with _heartbeat(run_id), running(RunContext(job_name, tick, clustered=True)):
        try:
            job = resolve(job_name)
            if job is None:
                raise UnknownJob(f"{job_name} is not declared in the code or enabled scripts of {process_name()}")
            execute(job)
        except Exception:
            logger.exception("%s @ %s failed", job_name, tick)
            _finish(run_id, RunOutcome.FAILED, traceback.format_exc())
            return Occurrence.FAILED
    _finish(run_id, RunOutcome.SUCCEEDED, "")
    return Occurrence.SUCCEEDED


def execute(job: ScheduledJob) -> None:
    """Call the job's function, inside one transaction when it asked for one."""
    if job.transactional:
        with transaction.atomic():
            job.function()
    else:
        job.function()


def abandon_silent_runs(job_name: str | None = None) -> int:
    """Runs whose process stopped heartbeating are abandoned, so the job is not blocked forever. The
    heartbeats are stamped with the database's clock, and judged by it."""
    silent = JobRun.objects.filter(outcome=RunOutcome.RUNNING, heartbeat_at__lt=Now() - ABANDONED_AFTER)
    if job_name is not None:
        silent = silent.filter(job_name=job_name)
    abandoned = 0
    for run_id in silent.values_list("id", flat=True):
        abandoned += _finish(run_id, RunOutcome.ABANDONED, f"no heartbeat for {ABANDONED_AFTER.seconds} s")
    return abandoned


def prune_runs(older_than: timedelta) -> int:
    """Delete finished run records started before `older_than` ago, a batch at a time."""
    cutoff = Now() - older_than
    deleted = 0
    while True:
        batch = list(
            JobRun.objects.filter(started_at__lt=cutoff)
            .exclude(outcome=RunOutcome.RUNNING)
            .order_by("id")
            .values_list("id", flat=True)[:PRUNE_BATCH]
        )
        if not batch:
            return deleted
        deleted += JobRun.objects.filter(id__in=batch).delete()[0]


def _insert_run(job_name: str, tick: datetime, outcome: RunOutcome) -> int | None:
    """Insert the run row unless one exists for the tick (or, for running, one is running): its id, or None."""
    if outcome not in INITIAL_OUTCOMES:
        raise ValueError(f"a run cannot start as {outcome}")
    finished = outcome != RunOutcome.RUNNING
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {JobRun._meta.db_table}
                (job_name, tick, node, process, started_at, heartbeat_at, finished_at, outcome, error)
            VALUES (%s, %s, %s, %s, clock_timestamp(), CASE WHEN %s THEN NULL ELSE clock_timestamp() END,
                    CASE WHEN %s THEN clock_timestamp() END, %s, '')
            ON CONFLICT DO NOTHING
            RETURNING id
            """,
            [job_name, tick, settings.NODE_ID, process_name(), finished, finished, outcome.value],
        )
        row = cursor.fetchone()
    return row[0] if row else None


def _finish(run_id: int, outcome: RunOutcome, error: str) -> bool:
    """Move a running run to `outcome`; False when it had moved on already (e.g. abandoned meanwhile)."""
    allowed_from = [state for state, targets in TRANSITIONS.items() if outcome in targets]
    moved = JobRun.objects.filter(pk=run_id, outcome__in=allowed_from).update(
        outcome=outcome, finished_at=Now(), error=error
    )
    if not moved:
        logger.warning("run %s could not become %s: it is no longer %s", run_id, outcome, " or ".join(allowed_from))
    return bool(moved)


@contextmanager
def _heartbeat(run_id: int) -> Iterator[None]:
    stop = threading.Event()

    def beat() -> None:
        try:
            while not stop.wait(HEARTBEAT_SECONDS):
                try:
                    close_old_connections()
                    JobRun.objects.filter(pk=run_id, outcome=RunOutcome.RUNNING).update(heartbeat_at=Now())
                except Exception:  # the database away for a moment (a restart): beat again next time
                    logger.exception("heartbeat of run %s failed; retrying in %s s", run_id, HEARTBEAT_SECONDS)
                    connection.close()
        finally:
            connection.close()  # this thread's own connection

    thread = threading.Thread(target=beat, name=f"heartbeat-{run_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
