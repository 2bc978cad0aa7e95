"""The beat scheduler of every node: django-celery-beat's, switched off by `JOB_SCHEDULING=false`."""
import logging

from django.conf import settings
from django_celery_beat.schedulers import DatabaseScheduler

logger = logging.getLogger(__name__)


class NodeAwareScheduler(DatabaseScheduler):
    """A beat on a node with `JOB_SCHEDULING=false` stays up but schedules nothing."""

    def setup_schedule(self) -> None:
        if not settings.JOB_SCHEDULING:
            logger.warning("JOB_SCHEDULING=false on node %s: this beat schedules nothing", settings.NODE_ID)
            return
        super().setup_schedule()

    @property
    def schedule(self) -> dict:
        if not settings.JOB_SCHEDULING:
            return {}
        return super().schedule
