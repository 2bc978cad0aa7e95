"""Users and API tokens for the people and clients that drive Heavylift."""
import secrets

from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token


def ensure_admin_user(username: str = "admin") -> str | None:
    """Create a superuser with a generated password and return it; None when the user exists already."""
    User = get_user_model()
    if User.objects.filter(username=username).exists():
        return None
    password = secrets.token_urlsafe(12)
    User.objects.create_superuser(username=username, email="", password=password)
    return password


def api_token_for(username: str) -> str:
    """The user's API token (created on first use), sent as `Authorization: Bearer <token>`."""
    user = get_user_model().objects.get(username=username)
    token, _ = Token.objects.get_or_create(user=user)
    return token.key
