"""Scheduled jobs: clustered (once per occurrence in the cluster) and local (on every worker process).

    from scheduling import scheduled

    @scheduled(cron="0 0 1 * * ?")
    def nightly() -> None: ...

See docs/scheduling.md.
"""

from scheduling.registry import current_run, scheduled

__all__ = ["current_run", "scheduled"]
