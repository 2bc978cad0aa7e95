"""Who is calling, and what they may do: API tokens, scopes and the operator role (docs/security.md).

Authentication: `Authorization: Bearer <token>` (or `Token <token>`), checked against the hashed tokens of
`jobsite.tokens`; sessions (the admin's login) are the other way in.

Scopes: a view declares what a token needs with one class attribute, `required_scope`: a `Scope`, a tuple of
scopes any one of which will do, or a `{method: Scope}` mapping (`scope_by_method(read=…, write=…)` builds the usual one). `TokenHasScope`, in the
permission classes of the FHIR and control views, refuses a token without it (403); a session has every scope
(sessions are for staff on these APIs). A view without `required_scope` needs no particular scope.

Roles: an operator — a staff user's session, or a token with the `control` scope of a user who may operate (staff,
or granted `jobsite.operate`) — acts on every job; any other caller is a client and sees only its own. The role
is decided on every request from the user as they are now: a token does not outlive its user's staff status.
"""

from __future__ import annotations

from collections.abc import Mapping

from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request

from jobsite.models import ApiToken, Scope
from jobsite.tokens import find_token, may_operate, record_use

ScopeRule = Scope | tuple[Scope, ...] | Mapping[str, Scope] | None  # a tuple: any one of them will do


class BearerOrTokenAuthentication(BaseAuthentication):
    """`Bearer <token>` or `Token <token>`; sets `request.auth` to the `ApiToken`."""

    keywords = ("token", "bearer")

    def authenticate(self, request):
        auth = get_authorization_header(request).split()
        if not auth or auth[0].lower().decode(errors="replace") not in self.keywords:
            return None
        if len(auth) != 2:
            raise AuthenticationFailed("Invalid token header: give `Bearer <token>`")
        try:
            plaintext = auth[1].decode("ascii")
        except UnicodeError:
            raise AuthenticationFailed("Invalid token") from None
        token = find_token(plaintext)
        if token is None or not token.user.is_active:
            raise AuthenticationFailed("Invalid token (unknown, expired or revoked)")
        record_use(token)
        return token.user, token

    def authenticate_header(self, request) -> str:
        return "Bearer"


def scope_by_method(read: Scope, write: Scope) -> dict[str, Scope]:
    """The usual rule: safe methods (GET, HEAD, OPTIONS) need `read`, the others `write`."""
    return {**{method: read for method in SAFE_METHODS}, **{m: write for m in ("POST", "PUT", "PATCH", "DELETE")}}


def token_scopes(request: Request) -> frozenset[str] | None:
    """The scopes of the token the request came with; None when it came without one (a session, anonymous)."""
    return frozenset(request.auth.scopes) if isinstance(request.auth, ApiToken) else None


def has_scope(request: Request, scope: Scope) -> bool:
    scopes = token_scopes(request)
    return scopes is None or scope in scopes


def required_scope(view, method: str) -> Scope | tuple[Scope, ...] | None:
    rule: ScopeRule = getattr(view, "required_scope", None)
    if isinstance(rule, Mapping):
        return rule.get(method)
    return rule


class TokenHasScope(BasePermission):
    """A token must carry the scope the view declares in `required_scope` (see the module docstring)."""

    def has_permission(self, request: Request, view) -> bool:
        scope = required_scope(view, request.method)
        alternatives = scope if isinstance(scope, tuple) else (scope,)
        if scope is None or any(has_scope(request, one) for one in alternatives):
            return True
        self.message = (
            f"this token lacks the {' or '.join(repr(one.value) for one in alternatives)} scope this endpoint needs"
        )
        return False


def is_operator(request: Request) -> bool:
    """Staff on a session, or a token with the `control` scope of a user who may operate: sees and acts on
    every job."""
    user = request.user
    if not (user and user.is_authenticated):
        return False
    scopes = token_scopes(request)
    return Scope.CONTROL in scopes and may_operate(user) if scopes is not None else user.is_staff


# The scopes a token needs to cancel, restart or start a job of each definition on /control/jobs (reading one
# needs none): what starting it through its own endpoint needs, so a `fhir:read` token cannot cancel or restart
# its user's exports, imports or deletions. Operators act on all. Every registered definition is listed here
# or in UNSCOPED_JOB_DEFINITIONS (a test checks it); a definition in neither is the operators' alone.
JOB_DEFINITION_SCOPES: dict[str, tuple[Scope, ...]] = {
    "BULK_EXPORT": (Scope.EXPORT,),
    "BULK_IMPORT": (Scope.IMPORT,),
    "BULK_SUBMIT_UNDO": (Scope.IMPORT,),  # as its submission's imports: $bulk-submit's `stopped`, a replaced manifest
    "REINDEX": (Scope.FHIR_WRITE,),
    "DELETE_EXPUNGE": (Scope.FHIR_WRITE, Scope.ADMIN_DELETE),  # as $delete-expunge
    "EXPUNGE": (Scope.FHIR_WRITE, Scope.ADMIN_DELETE),  # as $expunge
    "TERMINOLOGY_UPLOAD": (Scope.TERMINOLOGY,),
    "TERMINOLOGY_DELETE": (Scope.TERMINOLOGY,),
    "VALUESET_EXPAND": (Scope.TERMINOLOGY,),
    "MERGE": (Scope.FHIR_WRITE,),  # as Patient/$merge
    "REPLACE_REFERENCES": (Scope.FHIR_WRITE,),  # as $hapi.fhir.replace-references
    "BULK_PATCH": (Scope.FHIR_WRITE,),  # as $hapi.fhir.bulk-patch
}
# Definitions any token of the job's owner may act on: the diagnostic jobs touch no data.
UNSCOPED_JOB_DEFINITIONS = frozenset({"DIAGNOSTIC_NOOP", "DIAGNOSTIC_NOOP_GATED", "DIAGNOSTIC_SPIN"})
UNMAPPED_JOB_SCOPES = (Scope.CONTROL,)  # the deliberate default: nobody mapped it, so only operators act on it


def job_scopes(definition_id: str) -> tuple[Scope, ...]:
    """The scopes a client's token needs to act on a job of `definition_id` on /control/jobs."""
    if definition_id in UNSCOPED_JOB_DEFINITIONS:
        return ()
    return JOB_DEFINITION_SCOPES.get(definition_id, UNMAPPED_JOB_SCOPES)


def missing_job_scope(request: Request, definition_id: str) -> Scope | None:
    """A scope this caller lacks to act on a job of `definition_id`, or None when it may act."""
    if is_operator(request):
        return None
    return next((scope for scope in job_scopes(definition_id) if not has_scope(request, scope)), None)
