"""The bulk import's scheduled tasks: every minute, what an ended import must not keep (raw NDJSON in chunks,
source credentials); every hour, the clean-up of what ended imports leave behind."""

from __future__ import annotations

import logging

from fhirjobs.bulkimport.services import discard_ended_import_data, purge_ended_imports
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
    if report.imports or report.staged_ids or report.load_summaries or report.writes:
        logger.info(
            "purged %d imports, %d staged ids, %d load summaries and %d recorded writes",
            report.imports,
            report.staged_ids,
            report.load_summaries,
            report.writes,
        )


@scheduled(every_seconds=60)
def discard_ended_import_data_and_credentials() -> None:
    """A failed or cancelled import's unfinished chunks hold raw NDJSON, and an ended import's row its source
    credentials: gone within a minute of the end, not at the purge days later."""
    report = discard_ended_import_data()
    if report.chunks or report.credentials:
        logger.info(
            "discarded the data of %d chunks and the source credentials of %d imports that ended",
            report.chunks,
            report.credentials,
        )
