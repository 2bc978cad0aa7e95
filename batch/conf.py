"""The batch app's settings, read from `django.conf.settings` (which reads the environment) each time,
so a test can change them with the `settings` fixture."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings


@dataclass(frozen=True)
class BatchSettings:
    maintenance_interval: timedelta
    lease: timedelta
    max_chunk_retries: int
    retry_later_delay: timedelta
    reannounce_after: timedelta
    purge_ended_after: timedelta
    max_chunk_run: timedelta
    node_timeout: timedelta
    maintenance_lease: timedelta
    retry_backoffs: tuple[timedelta, ...]
    settings_fingerprint: str  # opaque: recorded with every heartbeat, compared by the project (not the engine)

    def retry_backoff(self, errors: int) -> timedelta:
        """How long the retry after a chunk's `errors`-th error waits: the n-th backoff, the last one repeating."""
        if not self.retry_backoffs:
            return timedelta(0)
        return self.retry_backoffs[min(max(errors, 1), len(self.retry_backoffs)) - 1]

    @property
    def lease_renewal_interval(self) -> timedelta:
        return self.lease / 3  # two renewals may fail (a slow database) before the lease lapses

    @property
    def heartbeat_interval(self) -> timedelta:
        return self.node_timeout / 3  # two heartbeats may fail (a database restart) before the node counts as dead


def batch_settings() -> BatchSettings:
    return BatchSettings(
        maintenance_interval=timedelta(seconds=settings.BATCH_MAINTENANCE_INTERVAL_SECONDS),
        lease=timedelta(seconds=settings.BATCH_LEASE_SECONDS),
        max_chunk_retries=settings.BATCH_MAX_CHUNK_RETRIES,
        retry_later_delay=timedelta(seconds=settings.BATCH_RETRY_LATER_SECONDS),
        reannounce_after=timedelta(seconds=settings.BATCH_REANNOUNCE_AFTER_SECONDS),
        purge_ended_after=timedelta(days=settings.BATCH_PURGE_ENDED_AFTER_DAYS),
        max_chunk_run=timedelta(seconds=settings.BATCH_MAX_CHUNK_SECONDS),
        node_timeout=timedelta(seconds=settings.BATCH_NODE_TIMEOUT_SECONDS),
        maintenance_lease=timedelta(seconds=settings.BATCH_MAINTENANCE_LEASE_SECONDS),
        retry_backoffs=tuple(timedelta(seconds=seconds) for seconds in settings.BATCH_RETRY_BACKOFF_SECONDS),
        settings_fingerprint=getattr(settings, "BATCH_SETTINGS_FINGERPRINT", ""),
    )
