"""The terminology's scheduled job: pre-expand stale ValueSets (found by `scheduling`'s autodiscovery)."""
from __future__ import annotations

from fhirjobs.terminology.services import expand_stale_value_sets_now
from scheduling import scheduled


@scheduled(every_seconds=60)
def expand_stale_value_sets() -> None:
    """Once a minute in the whole cluster: a VALUESET_EXPAND job when a ValueSet's expansion is missing or stale
    (a code system version made current, the ValueSet changed, `$invalidate-expansion`) and none is running."""
    expand_stale_value_sets_now()


