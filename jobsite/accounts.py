"""Users: the first one of a new installation, clients and operators (API tokens: `jobsite.tokens`)."""

import secrets

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission


def ensure_admin_user(username: str = "admin") -> str | None:
    """Create a superuser with a generated password and return it; None when the user exists already."""
    User = get_user_model()
    if User.objects.filter(username=username).exists():
        return None
    password = secrets.token_urlsafe(12)
    User.objects.create_superuser(username=username, email="", password=password)
    return password


# What an operator needs in the admin besides staff: the dashboard's pages and buttons (docs/dashboard.md).
OPERATOR_PERMISSIONS = (
    "batch.view_jobinstance",
    "batch.change_jobinstance",
    "batch.view_workchunk",
    "scheduling.view_scheduledjobschedule",
    "scheduling.change_scheduledjobschedule",
    "scheduling.view_jobrun",
)


class AccountError(Exception):
    """The account cannot be created as asked."""


def create_account(username: str, operator: bool = False):
    """A user without a password: a client (not staff: its own jobs, through tokens) or, with `operator`, staff
    without superuser, granted the dashboard's view and change permissions. A password, for the admin, is set
    with `manage.py changepassword`. AccountError when the name is taken."""
    User = get_user_model()
    if User.objects.filter(username=username).exists():
        raise AccountError(f"a user {username!r} exists already")
    user = User.objects.create_user(username=username, is_staff=operator)  # no password: unusable
    if operator:
        wanted = [name.split(".") for name in OPERATOR_PERMISSIONS]
        user.user_permissions.add(
            *[Permission.objects.get(content_type__app_label=app, codename=codename) for app, codename in wanted]
        )
    return user
