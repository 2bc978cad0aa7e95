"""Existing plaintext tokens (DRF's `authtoken_token`, used before tokens were hashed) become hashed tokens with
the scopes of their user's role, and their plaintext rows are deleted: clients keep working, nothing readable
stays in the database."""

from django.db import migrations

from jobsite.tokens import PREFIX_LENGTH, token_digest

ALL = ["control", "export", "fhir:read", "fhir:write", "import"]


def hash_existing_tokens(apps, schema_editor):
    connection = schema_editor.connection
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass('authtoken_token') IS NOT NULL")
        if not cursor.fetchone()[0]:
            return
        cursor.execute(
            "SELECT t.key, t.user_id, t.created, u.is_staff FROM authtoken_token t JOIN auth_user u ON u.id = t.user_id"
        )
        rows = cursor.fetchall()
    ApiToken = apps.get_model("jobsite", "ApiToken")
    for key, user_id, created, is_staff in rows:
        token = ApiToken.objects.create(
            user_id=user_id,
            prefix=key[:PREFIX_LENGTH],
            digest=token_digest(key),
            scopes=[s for s in ALL if s != "control" or is_staff],
        )
        ApiToken.objects.filter(pk=token.pk).update(created_at=created)
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM authtoken_token")


class Migration(migrations.Migration):
    dependencies = [("jobsite", "0001_api_tokens"), ("auth", "0012_alter_user_first_name_max_length")]
    operations = [migrations.RunPython(hash_existing_tokens, migrations.RunPython.noop)]
