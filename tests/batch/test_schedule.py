"""Maintenance runs every few seconds through beat: django-celery-beat's scheduler syncs the entry."""
import pytest
from django_celery_beat.models import PeriodicTask

from jobsite.celery import app
from scheduling.beat import NodeAwareScheduler

pytestmark = pytest.mark.django_db(transaction=True)  # the scheduler closes connections


def test_beat_schedules_the_maintenance_pass_every_interval(settings):
    NodeAwareScheduler(app=app)

    entry = PeriodicTask.objects.get(name="batch-maintenance")
    assert entry.task == "batch.run_maintenance_pass" and entry.enabled
    assert (entry.interval.every, entry.interval.period) == (settings.BATCH_MAINTENANCE_INTERVAL_SECONDS, "seconds")
    app.loader.import_default_modules()  # what a worker does at start: autodiscovers batch.tasks
    assert "batch.run_maintenance_pass" in app.tasks
