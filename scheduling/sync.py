"""Declared jobs → django-celery-beat `PeriodicTask` rows: what beat schedules and the admin pauses.

Every job has one row named after it. Clustered jobs carry the task beat sends; local jobs carry a task that
is never sent (each worker process runs them itself), so that the admin lists and pauses them all the same.
The row's kwargs hold the exact schedule; its interval/crontab is only what the admin can display. The queue
is not in the row: each beat sends to its own SCHEDULER_QUEUE, so no process's sync can re-route the others.
The schedule is owned by code: a sync overwrites it, but leaves the `enabled` flag set in the admin alone.
A sync only adds and updates (any process of any release runs it at start); retiring the jobs a release no
longer declares is an explicit step of the upgrade, `retire_undeclared_jobs`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from django.db import connection, transaction
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask, PeriodicTasks

from scheduling.registry import SCRIPT_JOB_PREFIX, ScheduledJob
from scheduling.schedules import CronSchedule, EverySeconds, Schedule

logger = logging.getLogger(__name__)

CLUSTERED_TASK = "scheduling.run_clustered_job"
RUN_NOW_TASK = "scheduling.run_clustered_job_now"  # sent by the admin's "run now", never by beat
LOCAL_TASK = "scheduling.local_job"  # never sent by beat: marks a row as a local job's
OUR_TASKS = (CLUSTERED_TASK, LOCAL_TASK)
REMOVED_FROM_CODE = "Disabled by the scheduler: no longer declared in code."
SYNC_LOCK = 0x5C4ED  # pg advisory lock key: one sync at a time in the cluster (beats and workers start together)


@dataclass
class SyncReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    disabled: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)


def sync_declared_jobs(jobs: Iterable[ScheduledJob]) -> SyncReport:
    """Add the rows of code-declared jobs and update them to match `jobs`; never disable one.

    Every beat and worker runs this at start, and in a rolling upgrade the starting process may be of the
    previous release: disabling what it does not declare disabled every job the new release added, cluster-wide.
    Removing is `retire_undeclared_jobs`, an explicit step once every process runs the new release.
    """
    report = SyncReport()
    wanted = {job.name: job for job in jobs if not job.name.startswith(SCRIPT_JOB_PREFIX)}
    with transaction.atomic():
        _lock()
        for job in wanted.values():
            _upsert(job, _description(job, "declared in code"), report, enabled_if_created=True)
    _log(report, "code")
    return report


def retire_undeclared_jobs(jobs: Iterable[ScheduledJob]) -> SyncReport:
    """Disable the rows of code-declared jobs that `jobs` (this release's) no longer declares.

    The last step of an upgrade (`manage.py retire_scheduled_jobs`), run once no process of the previous release
    is left: a job declared again later is enabled again by the next sync (an operator's pause is never undone).
    """
    report = SyncReport()
    declared = {job.name for job in jobs}
    with transaction.atomic():
        _lock()
        rows = PeriodicTask.objects.filter(task__in=OUR_TASKS).exclude(name__startswith=SCRIPT_JOB_PREFIX)
        for row in rows.exclude(name__in=declared).select_for_update():
            if row.enabled or row.description != REMOVED_FROM_CODE:
                row.enabled = False
                row.description = REMOVED_FROM_CODE
                row.save()
                report.disabled.append(row.name)
    _log(report, "code")
    return report


def sync_script_jobs(script_name: str, jobs: Iterable[ScheduledJob], enabled: bool) -> SyncReport:
    """Make the rows of one custom script match its jobs; rows of functions it no longer has are deleted.

    Always moves django-celery-beat's change marker, so beats and local-job runners reload the script even
    when only its code changed and no row did.
    """
    report = SyncReport()
    wanted = {job.name: job for job in jobs}
    with transaction.atomic():
        _lock()
        for row in _script_rows(script_name).exclude(name__in=wanted):
            row.delete()
            report.deleted.append(row.name)
        for job in wanted.values():
            row = _upsert(job, _description(job, f"custom script {script_name}"), report, enabled_if_created=enabled)
            if row.enabled != enabled:
                row.enabled = enabled
                row.save()
                report.updated.append(job.name)
        PeriodicTasks.update_changed()
    _log(report, f"script {script_name}")
    return report


def delete_script_jobs(script_name: str) -> SyncReport:
    report = SyncReport()
    with transaction.atomic():
        _lock()
        for row in _script_rows(script_name):
            row.delete()
            report.deleted.append(row.name)
        PeriodicTasks.update_changed()
    _log(report, f"script {script_name}")
    return report


def enabled_local_job_names() -> list[str]:
    return list(PeriodicTask.objects.filter(task=LOCAL_TASK, enabled=True).values_list("name", flat=True))


def is_enabled(job_name: str) -> bool:
    return PeriodicTask.objects.filter(name=job_name, task__in=OUR_TASKS, enabled=True).exists()


def script_job_rows(script_name: str) -> list[dict]:
    """The jobs of a script as scheduled now: name, schedule, clustered, enabled."""
    return [
        {
            "name": row.name,
            "schedule": json.loads(row.kwargs)["schedule"],
            "clustered": row.task == CLUSTERED_TASK,
            "enabled": row.enabled,
        }
        for row in _script_rows(script_name).order_by("name")
    ]


def _script_rows(script_name: str):
    return PeriodicTask.objects.filter(task__in=OUR_TASKS, name__startswith=f"{SCRIPT_JOB_PREFIX}{script_name}.")


def _upsert(job: ScheduledJob, description: str, report: SyncReport, enabled_if_created: bool) -> PeriodicTask:
    wanted = {
        "task": CLUSTERED_TASK if job.clustered else LOCAL_TASK,
        "kwargs": json.dumps({"job": job.name, "schedule": job.schedule.to_dict()}, sort_keys=True),
        "queue": None,  # beat sends to its own SCHEDULER_QUEUE
        "description": description,
        **_display_schedule(job.schedule),
    }
    row = PeriodicTask.objects.select_for_update().filter(name=job.name).first()
    if row is None:
        row = PeriodicTask.objects.create(name=job.name, enabled=enabled_if_created, **wanted)
        report.created.append(job.name)
        return row
    if row.task not in OUR_TASKS:
        logger.error("not scheduling %s: a periodic task of that name runs %s", job.name, row.task)
        return row
    changed = {name: value for name, value in wanted.items() if getattr(row, name) != value}
    if row.description == REMOVED_FROM_CODE:
        row.enabled = True  # declared again: undo our own disabling, never an operator's pause
    if changed or row.description == REMOVED_FROM_CODE:
        for name, value in changed.items():
            setattr(row, name, value)
        row.save()
        report.updated.append(job.name)
    return row


def _display_schedule(schedule: Schedule) -> dict:
    """The nearest django-celery-beat schedule, for the admin's eyes only (beat uses the kwargs)."""
    if isinstance(schedule, CronSchedule) and schedule.fires_at_whole_minutes:
        minute, hour, day_of_month, month_of_year, day_of_week = schedule.minute_fields
        fields = {
            "minute": minute,
            "hour": hour,
            "day_of_month": day_of_month,
            "month_of_year": month_of_year,
            "day_of_week": day_of_week,
            "timezone": schedule.timezone,
        }
        try:
            CrontabSchedule(**fields).schedule  # parsed the way django-celery-beat will parse it
        except (ValueError, KeyError, IndexError):
            pass  # Quartz syntax (L, #, W) a crontab cannot show
        else:
            shown, _ = CrontabSchedule.objects.get_or_create(**fields)
            return {"crontab": shown, "interval": None}
    every = schedule.seconds if isinstance(schedule, EverySeconds) else 1  # seconds-level crons: checked each second
    shown, _ = IntervalSchedule.objects.get_or_create(every=every, period=IntervalSchedule.SECONDS)
    return {"interval": shown, "crontab": None}


def _description(job: ScheduledJob, origin: str) -> str:
    kind = "clustered (once in the cluster)" if job.clustered else "local (on every worker process)"
    transactional = ", in a transaction" if job.transactional else ""
    return f"{job.schedule}; {kind}{transactional}; {origin}. The schedule is set in code; pause it here."


def _lock() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [SYNC_LOCK])


def _log(report: SyncReport, what: str) -> None:
    for action in ("created", "updated", "disabled", "deleted"):
        names = getattr(report, action)
        if names:
            logger.info("scheduled jobs %s (%s): %s", action, what, ", ".join(names))
