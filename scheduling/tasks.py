"""Celery glue of the scheduling app: the task beat sends for clustered jobs, and worker start-up hooks."""

from __future__ import annotations

import logging
from datetime import datetime

from celery import shared_task
from celery.signals import celeryd_after_setup, worker_process_init, worker_ready
from django.conf import settings

from scheduling import runs
from scheduling.catalog import resolve_job
from scheduling.local import start_local_job_runner
from scheduling.registry import registry
from scheduling.schedules import schedule_from_dict
from scheduling.sync import CLUSTERED_TASK, RUN_NOW_TASK, is_enabled, sync_declared_jobs

logger = logging.getLogger(__name__)


@shared_task(name=CLUSTERED_TASK, ignore_result=True)
def run_clustered_job(job: str, schedule: dict, tick: str) -> str:
    """One occurrence of a clustered job; the run row in Postgres decides whether this process runs it."""
    occurrence = runs.run_occurrence(
        job, schedule_from_dict(schedule), datetime.fromisoformat(tick), resolve=resolve_job, is_enabled=is_enabled
    )
    logger.info("%s @ %s: %s", job, tick, occurrence.value)
    return occurrence.value


@shared_task(name=RUN_NOW_TASK, ignore_result=True)
def run_clustered_job_now(job: str, tick: str) -> str:
    """An operator's "run now": once in the cluster however often the message is delivered (the tick is the click)."""
    occurrence = runs.run_occurrence(
        job, None, datetime.fromisoformat(tick), resolve=resolve_job, is_enabled=is_enabled, on_demand=True
    )
    logger.info("%s run now @ %s: %s", job, tick, occurrence.value)
    return occurrence.value


@celeryd_after_setup.connect
def leave_scheduled_work_to_other_nodes(sender, instance, **kwargs) -> None:
    """With JOB_SCHEDULING=false a worker never consumes the scheduled-jobs queue, whatever its -Q says."""
    if not settings.JOB_SCHEDULING:
        instance.app.amqp.queues.deselect([settings.SCHEDULER_QUEUE])
        logger.warning("JOB_SCHEDULING=false on node %s: this worker takes no scheduled jobs", settings.NODE_ID)


@worker_ready.connect
def sync_declared_jobs_when_ready(**kwargs) -> None:
    if settings.JOB_SCHEDULING:
        sync_declared_jobs(registry.all())


@worker_process_init.connect
def start_local_jobs(**kwargs) -> None:
    if settings.JOB_SCHEDULING:
        start_local_job_runner()
