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
def test_a_table_a_test_wrote_starts_again_from_an_empty_file_and_no_row_estimate():
    """As after Django's flush: a later test's code that reads PostgreSQL's estimates (`reltuples`, e.g. the
    export's choice of walk) must not see this test's table."""
    from django.db import connection

    User.objects.bulk_create(User(username=f"user-{n}") for n in range(200))
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE auth_user")

    baseline.restore()

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_relation_size('auth_user'), reltuples FROM pg_class WHERE relname = 'auth_user'")
        assert cursor.fetchone() == (0, -1)
    assert not User.objects.exists() and Permission.objects.exists()
