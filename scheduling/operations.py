"""What an operator does to scheduled jobs from the admin: see them with their runs, pause, resume, run now.

A job is its django-celery-beat `PeriodicTask` row (see `scheduling.sync`); pausing clears the row's
`enabled` flag, which beat, the clustered task and the local-job runners all read. "Run now" sends the
clustered task with the moment of the click as its tick, so the (job, tick) row in Postgres still lets
exactly one process run it, however many times the message is delivered.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import OuterRef, QuerySet, Subquery
from django_celery_beat.models import PeriodicTask, PeriodicTasks

from scheduling.exceptions import SchedulingError, UnknownJob
from scheduling.models import JobRun, RunOutcome
from scheduling.schedules import Schedule, schedule_from_dict
from scheduling.sync import CLUSTERED_TASK, LOCAL_TASK, OUR_TASKS
from scheduling.tasks import run_clustered_job_now

RECENT_RUNS_SHOWN = 25
TICKS_SHOWN = 30
KINDS = {"clustered": CLUSTERED_TASK, "local": LOCAL_TASK}
# The recent-runs filter "problems": every outcome but a plain success (and a run still going).
PROBLEM_OUTCOMES = (RunOutcome.FAILED, RunOutcome.SKIPPED, RunOutcome.MISSED, RunOutcome.ABANDONED)
NOT_RUN = "not run"  # a tick of the schedule that left no run row: paused then, or no scheduler was up


@dataclass(frozen=True)
class LastRun:
    tick: datetime
    outcome: str
    started_at: datetime
    finished_at: datetime | None

    @property
    def duration_seconds(self) -> float | None:
        return (self.finished_at - self.started_at).total_seconds() if self.finished_at else None


def scheduled_job_rows() -> QuerySet[PeriodicTask]:
    """The rows of every declared and scripted job, each annotated with its last clustered run (local jobs
    run in every process and are not recorded, so theirs stay None)."""
    last = JobRun.objects.filter(job_name=OuterRef("name")).order_by("-tick")
    return PeriodicTask.objects.filter(task__in=OUR_TASKS).annotate(
        last_tick=Subquery(last.values("tick")[:1]),
        last_outcome=Subquery(last.values("outcome")[:1]),
        last_started_at=Subquery(last.values("started_at")[:1]),
        last_finished_at=Subquery(last.values("finished_at")[:1]),
    )


def schedule_of(row: PeriodicTask) -> Schedule:
    return schedule_from_dict(json.loads(row.kwargs)["schedule"])


def is_clustered(row: PeriodicTask) -> bool:
    return row.task == CLUSTERED_TASK


def next_run(row: PeriodicTask, now: datetime) -> datetime | None:
    """The next tick of an enabled job; None while it is paused."""
    return schedule_of(row).next_tick_after(now) if row.enabled else None


def last_run(row: PeriodicTask) -> LastRun | None:
    """From the annotations of `scheduled_job_rows()`."""
    if getattr(row, "last_tick", None) is None:
        return None
    return LastRun(row.last_tick, row.last_outcome, row.last_started_at, row.last_finished_at)


@dataclass(frozen=True)
class Tick:
    """One line of a job's tick history: a point on its schedule (or an operator's run-now) and its run, if any."""

    tick: datetime
    run: JobRun | None
    on_schedule: bool

    @property
    def outcome(self) -> str:
        return self.run.outcome if self.run else NOT_RUN

    @property
    def duration_seconds(self) -> float | None:
        if self.run is None or self.run.finished_at is None:
            return None
        return (self.run.finished_at - self.run.started_at).total_seconds()


def recent_runs(
    limit: int = RECENT_RUNS_SHOWN, job_name: str | None = None, problems_only: bool = False
) -> list[JobRun]:
    """The latest runs, newest first; of one job, or only those that did not simply succeed (a job every few
    seconds, like the maintenance pass, would otherwise fill the list)."""
    runs = JobRun.objects.order_by("-started_at")
    if job_name:
        runs = runs.filter(job_name=job_name)
    if problems_only:
        runs = runs.filter(outcome__in=PROBLEM_OUTCOMES)
    return list(runs[:limit])


def recorded_job_names() -> list[str]:
    """The clustered jobs that have runs on record, for the recent-runs filter."""
    return list(JobRun.objects.order_by("job_name").values_list("job_name", flat=True).distinct())


def tick_history(row: PeriodicTask, now: datetime, limit: int = TICKS_SHOWN) -> list[Tick]:
    """The latest `limit` ticks of a clustered job up to `now`, newest first, each with its run: a tick that
    left no row shows as not run (the job was paused, or no beat or scheduler worker was up), so gaps are seen,
    not just the runs that happened. Run-now runs (ticks off the schedule) are listed among them."""
    schedule = schedule_of(row)
    ticks, moment = [], now
    for _ in range(limit):
        tick = schedule.latest_tick_at_or_before(moment)
        ticks.append(tick)
        moment = tick - timedelta(microseconds=1)
    runs = {run.tick: run for run in JobRun.objects.filter(job_name=row.name, tick__gte=ticks[-1], tick__lte=now)}
    history = [Tick(tick, runs.pop(tick, None), on_schedule=True) for tick in ticks]
    history += [Tick(tick, run, on_schedule=False) for tick, run in runs.items()]
    return sorted(history, key=lambda entry: entry.tick, reverse=True)


def set_paused(job_names: Iterable[str], paused: bool) -> int:
    """Pause or resume jobs; every beat and local-job runner notices through django-celery-beat's change marker."""
    with transaction.atomic():
        changed = (
            PeriodicTask.objects.filter(name__in=list(job_names), task__in=OUR_TASKS)
            .exclude(enabled=not paused)
            .update(enabled=not paused)
        )
        if changed:
            PeriodicTasks.update_changed()
    return changed


def run_now(job_name: str) -> datetime:
    """Run a clustered job once, now, on whichever scheduler process takes the message (paused or not).
    Its run is recorded like any other, with the database's time of the request as its tick.
    `UnknownJob` for a name that is not a scheduled job; `SchedulingError` for a local job, which has no
    one process to run it (it runs in every worker process on its own timer)."""
    row = PeriodicTask.objects.filter(name=job_name, task__in=OUR_TASKS).first()
    if row is None:
        raise UnknownJob(f"no scheduled job {job_name!r}")
    if not is_clustered(row):
        raise SchedulingError(
            f"{job_name} is a local job: it runs in every worker process on its own timer, "
            "so there is no single run to start"
        )
    with connection.cursor() as cursor:
        cursor.execute("SELECT clock_timestamp()")
        tick = cursor.fetchone()[0]
    transaction.on_commit(
        lambda: run_clustered_job_now.apply_async(
            kwargs={"job": job_name, "tick": tick.isoformat()}, queue=settings.SCHEDULER_QUEUE
        )
    )
    return tick
