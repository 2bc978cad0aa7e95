"""Issuing, checking and revoking API tokens: plain service functions under the auth class and the commands.

A token is `hl_` and 43 random URL-safe characters. The database keeps its first characters (the prefix, to
recognise it in lists) and an HMAC-SHA256 of the whole token keyed with SECRET_KEY: a stolen database or backup
does not give working tokens, and checking costs one indexed lookup and one HMAC, not a password hash's
deliberate slowness on every request. Digests are compared in constant time. Rotating SECRET_KEY invalidates
tokens unless the old key stays in SECRET_KEY_FALLBACKS.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Q
from django.db.models.functions import Now
from django.utils import timezone

from jobsite.models import ApiToken, Scope

TOKEN_PREFIX = "hl_"
PREFIX_LENGTH = 10  # characters of the token stored in clear to recognise it ("hl_" + 7)
LAST_USED_RESOLUTION = timedelta(minutes=1)  # `last_used_at` is written at most this often per token
ALL_SCOPES: tuple[str, ...] = tuple(Scope.values)
OPERATOR_SCOPES = frozenset({Scope.CONTROL, Scope.TERMINOLOGY, Scope.ADMIN_DELETE})  # given by default to staff only


class TokenError(ValueError):
    """A token cannot be issued as asked (unknown scope, bad expiry)."""


@dataclass(frozen=True)
class IssuedToken:
    token: ApiToken
    plaintext: str  # shown once; never stored


OPERATE_PERMISSION = "jobsite.operate"


def may_operate(user: AbstractBaseUser) -> bool:
    """Whether the user may hold the operator role (with a `control` token): active staff, or active users
    granted `jobsite.operate` (service accounts)."""
    return bool(user.is_active and (user.is_staff or user.has_perm(OPERATE_PERMISSION)))


def default_scopes(user: AbstractBaseUser) -> list[str]:
    """Every scope the user's role allows: operators (`may_operate`) get `control`, `terminology` and
    `admin:delete` too, other users everything else."""
    return [scope for scope in ALL_SCOPES if scope not in OPERATOR_SCOPES or may_operate(user)]


def token_digest(plaintext: str, secret: str | None = None) -> str:
    key = (secret or settings.SECRET_KEY).encode()
    return hmac.new(key, plaintext.encode(), hashlib.sha256).hexdigest()


def issue_token(
    user: AbstractBaseUser, scopes: Iterable[str] | None = None, expires_in_days: int | None = None
) -> IssuedToken:
    """Create a token for `user`; without `scopes`, every scope the user's role allows."""
    chosen = default_scopes(user) if scopes is None else sorted(set(scopes))
    unknown = sorted(set(chosen) - set(ALL_SCOPES))
    if unknown:
        raise TokenError(f"unknown scope {', '.join(unknown)}; one of {', '.join(ALL_SCOPES)}")
    if not chosen:
        raise TokenError("a token needs at least one scope")
    if Scope.CONTROL in chosen and not may_operate(user):
        raise TokenError(
            f"the control scope is for operators: {user.get_username()} is neither staff nor granted "
            f"{OPERATE_PERMISSION}"
        )
    if expires_in_days is not None and expires_in_days < 1:
        raise TokenError(f"--expires-in must be at least 1 day, got {expires_in_days}")
    plaintext = TOKEN_PREFIX + secrets.token_urlsafe(32)
    expires_at = timezone.now() + timedelta(days=expires_in_days) if expires_in_days else None
    token = ApiToken.objects.create(
        user=user,
        prefix=plaintext[:PREFIX_LENGTH],
        digest=token_digest(plaintext),
        scopes=chosen,
        expires_at=expires_at,
    )
    return IssuedToken(token, plaintext)


def token_for(user: AbstractBaseUser, scopes: Iterable[str] | None = None) -> str:
    """A new token's plaintext: the one-liner tests and the demo use."""
    return issue_token(user, scopes).plaintext


def find_token(plaintext: str) -> ApiToken | None:
    """The live (not revoked, not expired) token with this plaintext, or None; expiry by the database's clock."""
    if not plaintext or len(plaintext) > 200:
        return None
    secrets_to_try = [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]
    candidates = (
        ApiToken.objects.select_related("user")
        .filter(prefix=plaintext[:PREFIX_LENGTH], revoked_at__isnull=True)
        .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=Now()))
    )
    for token in candidates:
        if any(hmac.compare_digest(token.digest, token_digest(plaintext, secret)) for secret in secrets_to_try):
            return token
    return None


def record_use(token: ApiToken) -> None:
    """Stamp `last_used_at` (the database's clock), at most once per LAST_USED_RESOLUTION, in one UPDATE."""
    (
        ApiToken.objects.filter(pk=token.pk)
        .filter(Q(last_used_at__isnull=True) | Q(last_used_at__lt=Now() - LAST_USED_RESOLUTION))
        .update(last_used_at=Now())
    )


def revoke_tokens(*, token: str | None = None, username: str | None = None) -> int:
    """Revoke live tokens: the one `token` names (the whole token, or its prefix as listed) and/or all of
    `username`'s; returns how many."""
    if not token and not username:
        raise TokenError("give a token (or its prefix) or --user")
    if token and len(token) < PREFIX_LENGTH:
        raise TokenError(f"a token prefix has {PREFIX_LENGTH} characters, got {token!r}")
    live = ApiToken.objects.filter(revoked_at__isnull=True)
    if token and len(token) > PREFIX_LENGTH:
        found = find_token(token)
        live = live.filter(pk=found.pk if found else None)
    elif token:
        live = live.filter(prefix=token)
    if username:
        live = live.filter(user__username=username)
    return live.update(revoked_at=Now())
