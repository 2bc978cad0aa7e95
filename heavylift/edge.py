"""Hostile input stops at the edge of the two APIs, answered in each API's own error shape, never with a 500.

Before a view runs, a request to `/fhir` or `/control` is refused when its body is larger than the API accepts
(413), when its path, query or body holds a NUL character, bytes that are not UTF-8, or (in JSON) a `\\u0000`
escape or a lone UTF-16 surrogate — PostgreSQL can store none of them — or when its JSON nests deeper than
API_MAX_JSON_DEPTH (400; Python's parser would overflow its stack near 1,000). The depth is measured on the raw
bytes with a few C-speed passes (strings blanked by one regular expression, brackets kept, innermost pairs
removed once per level), so a 20 MB bundle costs milliseconds, not a second parse.

After the view, any error page Django itself rendered as HTML on these paths (an unknown URL, a 500, a
SuspiciousOperation) is replaced by the API's error document: an OperationOutcome on `/fhir`, `{"errors": [...]}`
on `/control`.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from urllib.parse import unquote_to_bytes

from django.conf import settings
from django.http import HttpRequest, HttpResponse

logger = logging.getLogger(__name__)

FHIR_PREFIX = "/fhir"
CONTROL_PREFIX = "/control"
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'"[]{}')
_INNERMOST_PAIR = re.compile(rb"[\[{][\]}]")
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


class Refused(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def without_escaped_pairs(data: bytes) -> bytes:
    """The JSON text with every `\\\\` and `\\"` removed: each backslash left starts a real escape, and every
    quote left opens or closes a string."""
    return data.replace(b"\\\\", b"").replace(b'\\"', b"")


def json_depth_exceeds(unescaped: bytes, limit: int) -> bool:
    """True when the JSON text nests arrays/objects deeper than `limit` (malformed text: left to the parser).

    Brackets in strings do not count: with quotes and brackets kept alone, every other piece between quotes is
    outside a string."""
    brackets = b"".join(unescaped.translate(None, _NOT_STRUCTURE).split(b'"')[::2])
    for _ in range(limit):
        if not brackets:
            return False
        brackets, removed = _INNERMOST_PAIR.subn(b"", brackets)
        if not removed:
            return False  # unbalanced: not JSON, the parser says so
    return _INNERMOST_PAIR.search(brackets) is not None


def check_text(raw: bytes, where: str) -> None:
    if b"\x00" in raw:
        raise Refused(400, f"the {where} contains a NUL character, which cannot be stored")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise Refused(400, f"the {where} is not valid UTF-8 (byte {error.start})") from None


def check_json(data: bytes) -> None:
    unescaped = without_escaped_pairs(data)
    if b"\\u0000" in unescaped:
        raise Refused(400, "the body contains the escape \\u0000 (NUL), which cannot be stored")
    if b"\\u" in unescaped:
        _check_surrogate_pairs(unescaped)
    limit = settings.API_MAX_JSON_DEPTH
    if json_depth_exceeds(unescaped, limit):
        raise Refused(400, f"the JSON nests deeper than {limit} levels (API_MAX_JSON_DEPTH)")


def _check_surrogate_pairs(unescaped: bytes) -> None:
    """Every `\\uD800`-`\\uDBFF` escape must be followed at once by a `\\uDC00`-`\\uDFFF` one, and no low one
    may stand alone: PostgreSQL refuses anything else."""
    expecting_low_at = None
    for match in _SURROGATE_ESCAPE.finditer(unescaped):
        is_high = match.group()[3:4] in b"89abAB"
        if expecting_low_at is not None:
            if is_high or match.start() != expecting_low_at:
                break
            expecting_low_at = None
        elif is_high:
            expecting_low_at = match.end()
        else:
            break
    else:
        if expecting_low_at is None:
            return
    raise Refused(400, "the body contains a lone UTF-16 surrogate escape, which is not valid Unicode")


def check_request(request: HttpRequest, max_bytes: int) -> None:
    if "\x00" in request.path:
        raise Refused(400, "the path contains a NUL character")
    check_text(unquote_to_bytes(request.META.get("QUERY_STRING", "").replace("+", " ")), "query string")
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise Refused(400, "Content-Length is not a number") from None
    if declared < 0:
        raise Refused(400, "Content-Length is negative")
    if declared > max_bytes:
        raise Refused(413, f"the body has {declared} bytes; at most {max_bytes} are accepted here")
    if not declared:
        return
    content_type = request.content_type or ""
    if "json" in content_type or not content_type:  # no Content-Type: the FHIR API reads the body as JSON
        data = request.body
        check_text(data, "body")
        check_json(data)
    elif content_type == "application/x-www-form-urlencoded":
        check_text(unquote_to_bytes(request.body.replace(b"+", b" ")), "form body")


def error_response(path: str, status: int, message: str) -> HttpResponse:
    """The error document of the API `path` belongs to."""
    if path.startswith(FHIR_PREFIX):
        code = {401: "login", 403: "forbidden", 404: "not-found", 413: "too-costly"}.get(status, "invalid")
        severity = "fatal" if status >= 500 else "error"
        document = {
            "resourceType": "OperationOutcome",
            "issue": [{"severity": severity, "code": "exception" if status >= 500 else code, "diagnostics": message}],
        }
        content_type = "application/fhir+json; charset=utf-8"
    else:
        document, content_type = {"errors": [message]}, "application/json"
    return HttpResponse(json.dumps(document), status=status, content_type=content_type)


def _api_of(path: str) -> bool:
    return any(
        path == prefix or path.startswith(prefix + "/") or path.startswith(prefix + "?")
        for prefix in (FHIR_PREFIX, CONTROL_PREFIX)
    )


class HostileInputMiddleware:
    """Checks requests to the APIs before their views, and gives Django's own HTML error pages the API's shape."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        path = request.path_info
        if not _api_of(path):
            return self.get_response(request)
        max_bytes = (
            settings.FHIR_MAX_REQUEST_BYTES if path.startswith(FHIR_PREFIX) else settings.CONTROL_MAX_REQUEST_BYTES
        )
        try:
            check_request(request, max_bytes)
        except Refused as refused:
            return error_response(path, refused.status, str(refused))
        response = self.get_response(request)
        if response.status_code >= 400 and response.get("Content-Type", "").startswith("text/html"):
            message = {404: "no such endpoint", 500: "internal error; see the server log"}.get(
                response.status_code, response.reason_phrase or "refused"
            )
            return error_response(path, response.status_code, message)
        return response
