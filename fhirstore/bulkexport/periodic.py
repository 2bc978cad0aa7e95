"""The bulk export's scheduled task: the hourly purge of expired export files, once per hour in the cluster."""
from __future__ import annotations

import logging

from fhirstore.bulkexport.services import purge_expired_exports
from scheduling import scheduled

logger = logging.getLogger(__name__)


@scheduled(every_seconds=3600)
def purge_expired_export_files() -> None:
    """Files are promised until `Expires`, not longer: delete them, their rows, and their exports."""
    report = purge_expired_exports()
    if report.exports:
        logger.info("purged %d expired exports (%d files)", report.exports, report.files)
