"""The reset after a transactional test: every row a test wrote is gone, what `migrate` wrote is back."""
import pytest
from django.contrib.auth.models import Permission, User
from django.contrib.contenttypes.models import ContentType
from django_celery_beat.models import PeriodicTask

from tests.database_baseline import baseline


@pytest.mark.django_db(transaction=True)
def test_the_reset_removes_what_a_test_wrote_and_brings_back_what_migrate_wrote():
    migrated = (ContentType.objects.count(), Permission.objects.count(), PeriodicTask.objects.count())
    assert min(migrated) > 0
    User.objects.create(username="written-by-a-test")
    Permission.objects.all().delete()
    PeriodicTask.objects.all().delete()

    baseline.restore()

    assert not User.objects.exists()
    assert (ContentType.objects.count(), Permission.objects.count(), PeriodicTask.objects.count()) == migrated
    assert Permission.objects.filter(content_type__in=ContentType.objects.all()).count() == migrated[1]
