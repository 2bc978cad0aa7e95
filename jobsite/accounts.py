"""The first user of a new installation (API tokens: `jobsite.tokens`)."""
import secrets

from django.contrib.auth import get_user_model


def ensure_admin_user(username: str = "admin") -> str | None:
    """Create a superuser with a generated password and return it; None when the user exists already."""
    User = get_user_model()
    if User.objects.filter(username=username).exists():
        return None
    password = secrets.token_urlsafe(12)
    User.objects.create_superuser(username=username, email="", password=password)
    return password
