"""The bulk import's scheduled task: the hourly clean-up of what ended imports leave behind."""
from __future__ import annotations

import logging

from fhirjobs.bulkimport.services import purge_ended_imports
from scheduling import scheduled

logger = logging.getLogger(__name__)

# Scheduled jobs are known by name in the database (their beat rows, their runs, an operator's pause), and the
# name is the function's dotted path by default: these keep the path they had before the job moved from
# `fhirstore/` to `fhirjobs/`, so an existing database carries on with the same rows.
NAMES_BEFORE_THE_MOVE = "fhirstore.bulkimport.periodic"


@scheduled(every_seconds=3600, name=f"{NAMES_BEFORE_THE_MOVE}.purge_import_leftovers")
def purge_import_leftovers() -> None:
    """Staged ids and load summaries of imports that ended a day ago, and imports whose job batch purged."""
    report = purge_ended_imports()
    if report.imports or report.staged_ids or report.load_summaries:
        logger.info("purged %d imports, %d staged ids and %d load summaries", report.imports, report.staged_ids,
                    report.load_summaries)
