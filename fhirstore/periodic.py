"""The FHIR store's scheduled jobs (found by `scheduling`, which imports every installed app's `periodic` module)."""

from fhirstore.search import delete_expired_searches
from scheduling import scheduled


@scheduled(every_seconds=60)
def delete_expired_cached_searches() -> None:
    """Paging links live EXPIRE_SEARCH_RESULTS_AFTER_MINUTES (as HAPI); then the rows go."""
    delete_expired_searches()
