"""Batch workers step in when the scheduled maintenance pass is starved."""

from datetime import timedelta

import pytest
from django.db.models import F

from batch.maintenance import run_maintenance_pass
from batch.maintenance_watchdog import check_once, maintenance_is_overdue
from batch.models import MaintenancePass

pytestmark = pytest.mark.django_db


def test_a_recent_pass_leaves_the_watchdog_idle():
    run_maintenance_pass()

    assert not maintenance_is_overdue()
    assert check_once() is False


def test_no_pass_for_three_intervals_makes_the_watchdog_run_one(settings):
    run_maintenance_pass()
    MaintenancePass.objects.update(
        ended_at=F("ended_at") - timedelta(seconds=3 * settings.BATCH_MAINTENANCE_INTERVAL_SECONDS + 1)
    )
    assert maintenance_is_overdue()

    assert check_once() is True

    assert not maintenance_is_overdue()


def test_a_cluster_that_never_ran_maintenance_is_overdue():
    MaintenancePass.objects.all().delete()

    assert maintenance_is_overdue()
