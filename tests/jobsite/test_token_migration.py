"""Tokens from before hashing (DRF's plaintext `authtoken_token`) keep working and leave no plaintext behind."""

import importlib

import pytest
from django.apps import apps
from django.db import connection

from jobsite.tokens import find_token

pytestmark = pytest.mark.django_db

hash_existing_tokens = importlib.import_module("jobsite.migrations.0002_hash_existing_tokens").hash_existing_tokens


def test_existing_plaintext_tokens_are_hashed_and_deleted(django_user_model):
    staff = django_user_model.objects.create_user("ops", is_staff=True)
    client = django_user_model.objects.create_user("client")
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TABLE authtoken_token (key varchar(40) PRIMARY KEY, created timestamptz NOT NULL,"
            " user_id integer NOT NULL)"
        )
        cursor.execute(
            "INSERT INTO authtoken_token VALUES (%s, now(), %s), (%s, now(), %s)",
            ["a" * 40, staff.pk, "b" * 40, client.pk],
        )

    with connection.schema_editor() as editor:
        hash_existing_tokens(apps, editor)

    assert "control" in find_token("a" * 40).scopes
    assert "control" not in find_token("b" * 40).scopes and find_token("b" * 40).user == client
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM authtoken_token")
        assert cursor.fetchone()[0] == 0
