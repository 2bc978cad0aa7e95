"""API tokens: stored hashed with a visible prefix, scoped, expiring, revocable; the commands that make them."""

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from jobsite.models import ApiToken
from jobsite.tokens import ALL_SCOPES, TokenError, find_token, issue_token, revoke_tokens, token_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def client_user(django_user_model):
    return django_user_model.objects.create_user("client")


def control(token: str) -> APIClient:
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return api


def test_only_a_keyed_hash_and_a_prefix_are_stored(client_user):
    issued = issue_token(client_user)
    with connection.cursor() as cursor:
        cursor.execute("SELECT prefix, digest, scopes::text FROM jobsite_apitoken")
        stored = " ".join(str(value) for value in cursor.fetchone())

    assert issued.plaintext not in stored and issued.plaintext[12:] not in stored
    assert issued.token.prefix == issued.plaintext[:10] and issued.plaintext.startswith("hl_")
    assert find_token(issued.plaintext) == issued.token
    assert find_token(issued.plaintext[:-1] + ("A" if issued.plaintext[-1] != "A" else "B")) is None


def test_default_scopes_follow_the_role(client_user, django_user_model):
    staff = django_user_model.objects.create_user("staff", is_staff=True)

    assert set(issue_token(staff).token.scopes) == set(ALL_SCOPES)
    assert set(issue_token(client_user).token.scopes) == set(ALL_SCOPES) - {"control", "terminology", "admin:delete"}


def test_unknown_scopes_and_bad_expiry_are_refused(client_user):
    with pytest.raises(TokenError, match="unknown scope admin"):
        issue_token(client_user, ["admin"])
    with pytest.raises(TokenError, match="at least 1 day"):
        issue_token(client_user, expires_in_days=0)
    assert not ApiToken.objects.exists()


def test_an_expired_or_revoked_token_is_401_and_use_is_recorded(client_user):
    live, expired, revoked = (token_for(client_user) for _ in range(3))
    ApiToken.objects.filter(prefix=expired[:10]).update(expires_at=timezone.now() - timedelta(seconds=1))
    revoke_tokens(token=revoked[:10])

    assert control(live).get("/control/jobs").status_code == 200
    assert control(expired).get("/control/jobs").status_code == 401
    assert control(revoked).get("/control/jobs").status_code == 401
    assert ApiToken.objects.get(prefix=live[:10]).last_used_at is not None


def test_create_api_token_prints_the_token_last_and_honours_scopes_and_expiry(client_user):
    out = StringIO()
    call_command(
        "create_api_token",
        "client",
        "--scopes",
        "fhir:read",
        "export",
        "--expires-in",
        "30",
        stdout=out,
        stderr=StringIO(),
    )
    plaintext = out.getvalue().strip().splitlines()[-1]

    token = find_token(plaintext)
    assert token.scopes == ["export", "fhir:read"]
    assert timedelta(days=29) < token.expires_at - timezone.now() <= timedelta(days=30)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["nobody"], "no such user"),
        (["client", "--scopes", "root"], "unknown scope root"),
        (["client", "--expires-in", "-1"], "at least 1 day"),
    ],
)
def test_create_api_token_refuses_in_one_line(client_user, argv, message):
    with pytest.raises(CommandError, match=message):
        call_command("create_api_token", *argv, stdout=StringIO(), stderr=StringIO())


def test_revoke_api_token_by_prefix_or_user(client_user):
    first, second = token_for(client_user), token_for(client_user)
    call_command("revoke_api_token", first[:10], stdout=StringIO())
    assert find_token(first) is None and find_token(second) is not None

    call_command("revoke_api_token", "--user", "client", stdout=StringIO())
    assert find_token(second) is None
    with pytest.raises(CommandError, match="no live token"):
        call_command("revoke_api_token", "--user", "client", stdout=StringIO())


def test_the_admin_lists_tokens_by_prefix_revokes_them_and_never_shows_a_digest(client_user, admin_client):
    issued = issue_token(client_user)

    listing = admin_client.get("/admin/jobsite/apitoken/").content.decode()
    detail = admin_client.get(f"/admin/jobsite/apitoken/{issued.token.pk}/change/").content.decode()
    assert issued.token.prefix in listing
    assert issued.token.digest not in listing + detail and issued.plaintext not in listing + detail
    assert admin_client.get("/admin/jobsite/apitoken/add/").status_code == 403

    admin_client.post("/admin/jobsite/apitoken/", {"action": "revoke", "_selected_action": [issued.token.pk]})
    assert find_token(issued.plaintext) is None
