"""The terminology's scheduled jobs: pre-expand stale ValueSets, drop abandoned inline upload files (found by
`scheduling`'s autodiscovery)."""

from __future__ import annotations

from fhirjobs.terminology.services import expand_stale_value_sets_now
from fhirstore.terminology.storage import drop_abandoned_uploaded_files
from scheduling import scheduled


@scheduled(every_seconds=60)
def expand_stale_value_sets() -> None:
    """Once a minute in the whole cluster: a VALUESET_EXPAND job when a ValueSet's expansion is missing or stale
    (a code system version made current, the ValueSet changed, `$invalidate-expansion`) and none is running."""
    expand_stale_value_sets_now()


@scheduled(every_seconds=3600)
def drop_abandoned_upload_files() -> None:
    """Inline files of uploads that failed or were cancelled a day ago (a finished upload drops its own)."""
    drop_abandoned_uploaded_files()
