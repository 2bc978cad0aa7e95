"""The batch engine's scheduled job: the maintenance pass, once per interval in the whole cluster."""

from django.conf import settings

from batch.maintenance import run_maintenance_pass
from scheduling import scheduled

maintenance = scheduled(every_seconds=settings.BATCH_MAINTENANCE_INTERVAL_SECONDS, name="batch.maintenance")(
    run_maintenance_pass
)
