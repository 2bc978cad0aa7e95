"""The bulk export's scheduled tasks, each once per tick in the cluster: the hourly purge of expired exports,
and, every minute, the deletion of failed or cancelled exports' files and of the patient data they left in
work chunks, and the refresh of `$bulk-publish` publications."""

from __future__ import annotations

import logging

from fhirjobs.bulkexport.publish import refresh_publications
from fhirjobs.bulkexport.services import (
    delete_files_of_ended_exports,
    discard_ended_export_data,
    purge_expired_exports,
)
from scheduling import scheduled

logger = logging.getLogger(__name__)

# Scheduled jobs are known by name in the database (their beat rows, their runs, an operator's pause), and the
# name is the function's dotted path by default: these keep the path they had before the job moved from
# `fhirstore/` to `fhirjobs/`, so an existing database carries on with the same rows.
NAMES_BEFORE_THE_MOVE = "fhirstore.bulkexport.periodic"


@scheduled(every_seconds=3600, name=f"{NAMES_BEFORE_THE_MOVE}.purge_expired_export_files")
def purge_expired_export_files() -> None:
    """Files are promised until `Expires`, not longer: delete them, their rows, and their exports."""
    report = purge_expired_exports()
    if report.exports:
        logger.info("purged %d expired exports (%d files)", report.exports, report.files)


@scheduled(every_seconds=60, name=f"{NAMES_BEFORE_THE_MOVE}.discard_failed_export_data")
def discard_failed_export_data() -> None:
    """A failed or cancelled export's unfinished chunks hold resource ids and NDJSON: not kept for days."""
    discarded = discard_ended_export_data()
    if discarded:
        logger.info("discarded the data of %d chunks of ended exports", discarded)


@scheduled(every_seconds=60, name=f"{NAMES_BEFORE_THE_MOVE}.delete_files_of_failed_and_cancelled_exports")
def delete_files_of_failed_and_cancelled_exports() -> None:
    """A failed or cancelled export's files hold PHI nobody will download: gone within a minute, not at expiry."""
    deleted = delete_files_of_ended_exports()
    if deleted:
        logger.info("deleted %d files of failed or cancelled exports", deleted)


@scheduled(every_seconds=60)
def refresh_published_exports() -> None:
    """`$bulk-publish`: start each publication's next export when its cadence is up, swap it in once done."""
    for line in refresh_publications():
        logger.info("bulk publish: %s", line)
