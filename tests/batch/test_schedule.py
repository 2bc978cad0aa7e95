"""Maintenance is a clustered scheduled job: once per interval in the cluster, however many beats run."""

import pytest
from django_celery_beat.models import PeriodicTask

from batch.maintenance import run_maintenance_pass
from scheduling.registry import registry
from scheduling.sync import CLUSTERED_TASK, sync_declared_jobs

pytestmark = pytest.mark.django_db


def test_the_maintenance_pass_is_declared_as_a_clustered_job_every_interval(settings):
    job = registry.get("batch.maintenance")

    assert job.function is run_maintenance_pass
    assert job.clustered
    assert job.schedule.seconds == settings.BATCH_MAINTENANCE_INTERVAL_SECONDS


def test_start_up_sync_gives_beat_an_enabled_row_for_it():
    sync_declared_jobs(registry.all())

    entry = PeriodicTask.objects.get(name="batch.maintenance")
    assert entry.task == CLUSTERED_TASK and entry.enabled
