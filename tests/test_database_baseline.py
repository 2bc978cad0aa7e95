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


@pytest.mark.django_db(transaction=True)
def test_a_table_that_grew_is_emptied_to_a_new_file_so_no_dead_rows_are_left_for_later_tests():
    from django.db import connection

    User.objects.bulk_create(User(username=f"user-{n}") for n in range(2000))

    baseline.restore()

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_relation_size('auth_user')")
        assert cursor.fetchone()[0] == 0
    assert not User.objects.exists() and Permission.objects.exists()
