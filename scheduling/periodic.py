"""The scheduling app's own jobs (every app declares its jobs in its `periodic.py` the same way)."""

from datetime import timedelta

from django.conf import settings

from scheduling import scheduled
from scheduling.runs import abandon_silent_runs, prune_runs
from scheduling.scripts import expire_compiled_scripts

COMPILED_SCRIPT_IDLE_LIMIT = timedelta(minutes=5)  # a script not run for that long is compiled again on next use


@scheduled(cron="0 17 * * * ?")  # hourly, at :17 rather than :00 where hourly jobs pile up
def prune_job_runs() -> None:
    """Keep SCHEDULER_RUN_RETENTION_DAYS of run history, and free jobs whose process died mid-run."""
    abandon_silent_runs()
    prune_runs(timedelta(days=settings.SCHEDULER_RUN_RETENTION_DAYS))


@scheduled(every_seconds=60, clustered=False)
def expire_idle_compiled_scripts() -> None:
    """Each process keeps the custom scripts it ran compiled in memory; drop the ones it no longer runs."""
    expire_compiled_scripts(COMPILED_SCRIPT_IDLE_LIMIT)
