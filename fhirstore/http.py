"""The HTTP side of the FHIR API: who may call it, reading request bodies, and FHIR JSON responses.

Authentication is DRF's, configured in settings (API tokens as `Bearer`/`Token`, sessions); sessions are
for staff only. Writes always need an authenticated caller; reads too unless FHIR_ALLOW_ANONYMOUS_READ.
Every failure, authentication included, is answered with an OperationOutcome.
"""

from __future__ import annotations

import json
import logging
from email.utils import format_datetime

from django.conf import settings
from django.http import HttpResponse
from rest_framework import exceptions as drf_exceptions
from rest_framework.authentication import SessionAuthentication
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.renderers import BaseRenderer
from rest_framework.views import APIView

from fhirstore.authority import MANAGE_PERMISSION, WriteAuthority
from fhirstore.exceptions import (
    FhirStoreError,
    Forbidden,
    InvalidRequest,
    NotAuthorized,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from fhirstore.responses import operation_outcome, outcome
from fhirstore.storage import StoredVersion, version_from_etag
from jobsite.auth import ScopeRule, TokenHasScope, is_operator, scope_by_method
from jobsite.models import Scope

logger = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"


class FhirAccess(BasePermission):
    """Authenticated callers (a session only when staff); anonymous reads only when the setting allows."""

    message = "Sessions may use the FHIR API only for staff users; use an API token"

    def has_permission(self, request, view) -> bool:
        if request.user and request.user.is_authenticated:
            return request.user.is_staff or not isinstance(request.successful_authenticator, SessionAuthentication)
        return request.method in SAFE_METHODS and settings.FHIR_ALLOW_ANONYMOUS_READ


class FhirJsonRenderer(BaseRenderer):
    """Renders what DRF itself answers (OPTIONS); the views return finished responses."""

    media_type = FHIR_JSON
    format = "json"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None) -> bytes:
        return b"" if data is None else json.dumps(data, ensure_ascii=False).encode()


class AnyAccept(BaseContentNegotiation):
    """Answer FHIR JSON whatever the Accept header says, rather than refusing with 406."""

    def select_parser(self, request, parsers):
        return None

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class FhirView(APIView):
    """Reads need a token with `fhir:read`, writes `fhir:write`; a view declares otherwise in `required_scope`."""

    permission_classes = [FhirAccess, TokenHasScope]
    required_scope: ScopeRule = scope_by_method(read=Scope.FHIR_READ, write=Scope.FHIR_WRITE)
    renderer_classes = [FhirJsonRenderer]
    parser_classes: list = []  # bodies are read by `read_json_body`, with their size checked first
    content_negotiation_class = AnyAccept

    def handle_exception(self, exc: Exception) -> HttpResponse:
        if isinstance(exc, (drf_exceptions.NotAuthenticated, drf_exceptions.AuthenticationFailed)):
            response = error_response(NotAuthorized(str(exc.detail)))
            response["WWW-Authenticate"] = self.get_authenticate_header(self.request) or "Bearer"
            return response
        if isinstance(exc, drf_exceptions.PermissionDenied):
            return error_response(Forbidden(str(exc.detail)))
        if isinstance(exc, FhirStoreError):
            return error_response(exc)
        if isinstance(exc, drf_exceptions.APIException):
            return fhir_response(outcome("error", "processing", str(exc.detail)), status=exc.status_code)
        logger.exception("FHIR request failed: %s %s", self.request.method, self.request.get_full_path())
        return fhir_response(outcome("fatal", "exception", "Internal error; see the server log"), status=500)


def fhir_response(document: dict | None, status: int = 200, headers: dict[str, str] | None = None) -> HttpResponse:
    content = b"" if document is None else json.dumps(document, ensure_ascii=False).encode()
    response = HttpResponse(content, status=status, content_type=f"{FHIR_JSON}; charset=utf-8")
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def error_response(error: FhirStoreError) -> HttpResponse:
    return fhir_response(operation_outcome(error), status=error.status)


def version_headers(version: StoredVersion) -> dict[str, str]:
    return {"ETag": version.etag, "Last-Modified": format_datetime(version.last_updated, usegmt=True)}


def base_url(request) -> str:
    return request.build_absolute_uri("/fhir")


def read_json_body(request) -> object:
    """The request body parsed as JSON: 415 when it is not JSON, 413 when too large, 400 when malformed."""
    content_type = request.content_type or ""
    if content_type and "json" not in content_type:
        raise UnsupportedMediaType(f"Content-Type {content_type!r} is not supported; send {FHIR_JSON}")
    limit = settings.FHIR_MAX_REQUEST_BYTES
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise InvalidRequest("Content-Length is not a number") from None
    if declared > limit:
        raise PayloadTooLarge(f"The body has {declared} bytes; at most {limit} are accepted")
    data = request._request.read(limit + 1)  # not `.body`: its 2.5 MB cap is Django's, ours is the setting
    if len(data) > limit:
        raise PayloadTooLarge(f"The body is larger than {limit} bytes")
    if not data.strip():
        raise InvalidRequest("The request has no body")
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as error:
        raise InvalidRequest(f"The body is not valid JSON: {error}") from None
    except RecursionError:  # the edge refuses deep JSON first; this is for a caller that bypassed it
        raise InvalidRequest("The body is nested too deeply") from None


def read_form_body(request) -> str:
    """The form-encoded parameters of `POST T/_search`."""
    if request.content_type != "application/x-www-form-urlencoded":
        raise InvalidRequest("POST _search takes application/x-www-form-urlencoded parameters")
    return request._request.read(settings.FHIR_MAX_REQUEST_BYTES).decode(errors="replace")


def if_match_version(request) -> int | None:
    """The version an `If-Match: W/"3"` header asks for, or None."""
    return version_from_etag(request.headers.get("If-Match"))


def wants_minimal(request) -> bool:
    return "return=minimal" in request.headers.get("Prefer", "")


def write_authority(request) -> WriteAuthority:
    """The caller's authority for `storage`: SearchParameters change what every write indexes and start reindex
    jobs, so they are for operators or users granted the permission `fhirstore.manage_search_parameters`."""
    return WriteAuthority(
        manages_search_parameters=lambda: bool(is_operator(request) or request.user.has_perm(MANAGE_PERMISSION)),
        caller=request.user.get_username(),
    )
