"""The bulk import's scheduled task: the hourly clean-up of what ended imports leave behind."""
from __future__ import annotations

import logging

from fhirstore.bulkimport.services import purge_ended_imports
from scheduling import scheduled

logger = logging.getLogger(__name__)


@scheduled(every_seconds=3600)
def purge_import_leftovers() -> None:
    """Staged ids and load summaries of imports that ended a day ago, and imports whose job batch purged."""
    report = purge_ended_imports()
    if report.imports or report.staged_ids or report.load_summaries:
        logger.info("purged %d imports, %d staged ids and %d load summaries", report.imports, report.staged_ids,
                    report.load_summaries)
