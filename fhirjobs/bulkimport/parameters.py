"""`$import` and `$bulk-submit` request bodies (FHIR `Parameters`) as typed requests, checked at kick-off.

Every source URL is checked against the allow-list here, so a refused source is a 400 before anything
is fetched or started.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings

from fhirjobs.bulkimport.encryption import InvalidFileKey, check_file_key
from fhirjobs.bulkimport.exceptions import InvalidImportRequest
from fhirjobs.bulkimport.sources import check_source
from fhirstore.resource_types import is_resource_type

NDJSON_FORMATS = ("application/fhir+ndjson", "application/ndjson", "ndjson")
STORAGE_TYPES = ("https", "http", "file")
SUBMISSION_STATUSES = ("in-progress", "completed", "stopped")  # the STU4 ballot's submission-status value set
SUBMISSION_STATUS_SYSTEM = "http://hl7.org/fhir/event-status"
# Codes of earlier drafts and of other implementations, taken as the ballot's: `complete` (Pathling, and the
# Inferno kit's first submit), `entered-in-error` and `aborted` (the draft this server implemented first).
SUBMISSION_STATUS_ALIASES = {"complete": "completed", "entered-in-error": "stopped", "aborted": "stopped"}


@dataclass(frozen=True)
class ImportRequest:
    inputs: tuple[dict[str, str], ...] = ()  # {type, url}
    headers: dict[str, str] = field(default_factory=dict)  # sent with every fetch
    chunk_size: int = 0  # 0: BULK_IMPORT_CHUNK_SIZE
    manifest_url: str = ""
    file_encryption_key: str = field(default="", repr=False)  # $bulk-submit: the JWE delivering the files' key


@dataclass(frozen=True)
class SubmitRequest:
    submitter: str  # system|value
    submission_id: str
    status: str  # in-progress (the default), completed or stopped
    manifest_urls: tuple[str, ...]
    headers: dict[str, str]  # fileRequestHeader: sent with every fetch of the submission's manifests and files
    oauth_metadata_url: str = ""  # fetch a token by client credentials from the server this describes
    replaces_manifest_url: str = ""  # the submitted manifest that the one manifest_url corrects
    file_encryption_key: str = field(default="", repr=False)  # the JWE delivering the key of the encrypted files


def _value(parameter: dict[str, Any]) -> Any:
    return next((value for name, value in parameter.items() if name.startswith("value")), None)


def _parameters(body: object, operation: str) -> list[dict[str, Any]]:
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise InvalidImportRequest(f"{operation} takes a Parameters resource as its body")
    parameters = body.get("parameter") or []
    if not isinstance(parameters, list) or not all(isinstance(p, dict) for p in parameters):
        raise InvalidImportRequest("Parameters.parameter must be a list of parameters")
    return parameters


def parse_import_request(body: object) -> ImportRequest:
    """HAPI's `$import` Parameters: inputFormat, inputSource, storageDetail, repeated input {type, url}."""
    inputs, headers, chunk_size, problems = [], {}, 0, []
    for parameter in _parameters(body, "$import"):
        name, value = parameter.get("name"), _value(parameter)
        parts = {part.get("name"): _value(part) for part in parameter.get("part") or [] if isinstance(part, dict)}
        if name == "inputFormat" and value not in NDJSON_FORMATS:
            problems.append(f"inputFormat {value!r} is not supported; use application/fhir+ndjson")
        elif name == "storageDetail":
            if parts.get("type") not in (None, *STORAGE_TYPES):
                problems.append(f"storageDetail type {parts.get('type')!r} is not one of {', '.join(STORAGE_TYPES)}")
            if parts.get("credentialHttpBasic"):
                encoded = base64.b64encode(str(parts["credentialHttpBasic"]).encode()).decode()
                headers["Authorization"] = f"Basic {encoded}"
            if parts.get("credentialBearerToken"):
                headers["Authorization"] = f"Bearer {parts['credentialBearerToken']}"
            if parts.get("maxBatchResourceCount") is not None:
                chunk_size = _positive_int(parts["maxBatchResourceCount"], "maxBatchResourceCount", problems)
        elif name == "input":
            url, resource_type = parts.get("url"), parts.get("type")
            if not isinstance(url, str) or not url:
                problems.append("every input needs a url")
                continue
            if resource_type is not None and not is_resource_type(str(resource_type)):
                problems.append(f"input type {resource_type!r} is not a resource type")
            inputs.append({"type": str(resource_type or ""), "url": url})
    if not inputs:
        problems.append("give at least one input (with a url)")
    problems += _source_problems(item["url"] for item in inputs)
    if problems:
        raise InvalidImportRequest("; ".join(problems))
    return ImportRequest(tuple(inputs), headers, chunk_size)


def parse_submit_request(body: object) -> SubmitRequest:
    """Bulk Data STU4 ballot `$bulk-submit`: submitter, submissionId, submissionStatus, manifestUrl,
    replacesManifestUrl (with exactly one manifestUrl), fileRequestHeader, oauthMetadataUrl, fhirBaseUrl,
    fileEncryptionKey (opened here with this server's key: one that is not for it is a 400), outputFormat and
    metadata (checked, not kept)."""
    submitter = submission_id = None
    status, manifests, headers, problems, oauth_metadata_url, replaces = "in-progress", [], {}, [], "", ""
    file_encryption_key = ""
    for parameter in _parameters(body, "$bulk-submit"):
        name, value = parameter.get("name"), _value(parameter)
        if name == "submitter":
            if isinstance(value, dict) and value.get("value"):
                submitter = f"{value.get('system', '')}|{value['value']}"
        elif name == "submissionId" and isinstance(value, str) and value:
            submission_id = value
        elif name == "submissionStatus":
            status = _submission_status(value, problems)
        elif name == "manifestUrl" and isinstance(value, str) and value:
            manifests.append(value)
        elif name == "replacesManifestUrl":
            if not isinstance(value, str) or not value:
                problems.append("replacesManifestUrl must be the URL of a manifest submitted before")
            else:
                replaces = value
        elif name == "oauthMetadataUrl":
            if not _is_http_url(value):
                problems.append(f"oauthMetadataUrl {value!r} is not an http(s) URL")
            else:
                oauth_metadata_url = value
        elif name == "fhirBaseUrl" and not _is_http_url(value):
            problems.append(f"fhirBaseUrl {value!r} is not an http(s) URL")
        elif name == "outputFormat" and value not in NDJSON_FORMATS:
            problems.append(f"outputFormat {value!r} is not supported; use application/fhir+ndjson")
        elif name == "fileEncryptionKey":
            parts = {part.get("name"): _value(part) for part in parameter.get("part") or [] if isinstance(part, dict)}
            try:
                file_encryption_key = check_file_key(parts.get("coding"), parts.get("value"))
            except InvalidFileKey as error:
                problems.append(str(error))
        elif name == "fileRequestHeader":
            parts = {part.get("name"): _value(part) for part in parameter.get("part") or [] if isinstance(part, dict)}
            if parts.get("headerName") and parts.get("headerValue"):
                header_name, header_value = str(parts["headerName"]), str(parts["headerValue"])
                if header_name.lower() not in settings.BULK_IMPORT_REQUEST_HEADERS:
                    problems.append(
                        f"fileRequestHeader {header_name!r} is not one of the headers a provider may set "
                        f"({', '.join(settings.BULK_IMPORT_REQUEST_HEADERS)}: BULK_IMPORT_REQUEST_HEADERS)"
                    )
                elif any(character in header_value for character in "\r\n\0"):
                    problems.append(f"fileRequestHeader {header_name!r} has a line break or NUL in its value")
                else:
                    headers[header_name] = header_value
    if submitter is None:
        problems.append("submitter (an Identifier with a value) is required")
    elif settings.BULK_SUBMIT_ALLOWED_SUBMITTERS and submitter not in settings.BULK_SUBMIT_ALLOWED_SUBMITTERS:
        problems.append(f"submitter {submitter!r} is not an allowed submitter")
    if submission_id is None:
        problems.append("submissionId is required")
    if replaces and len(manifests) != 1:
        problems.append("replacesManifestUrl goes with exactly one manifestUrl: the corrected manifest")
    problems += _source_problems([*manifests, *([oauth_metadata_url] if oauth_metadata_url else [])])
    if problems:
        raise InvalidImportRequest("; ".join(problems))
    return SubmitRequest(
        submitter, submission_id, status, tuple(manifests), headers, oauth_metadata_url, replaces, file_encryption_key
    )


def _submission_status(value: object, problems: list[str]) -> str:
    """The ballot's code of a `submissionStatus` Coding (or a bare code, as earlier drafts sent it)."""
    if isinstance(value, dict):
        system, code = value.get("system"), value.get("code")
        if system not in (None, SUBMISSION_STATUS_SYSTEM):
            problems.append(f"submissionStatus system {system!r} is not {SUBMISSION_STATUS_SYSTEM}")
    else:
        code = value
    code = SUBMISSION_STATUS_ALIASES.get(code, code) if isinstance(code, str) else code
    if code not in SUBMISSION_STATUSES:
        problems.append(f"submissionStatus {code!r} is not one of {', '.join(SUBMISSION_STATUSES)}")
    return str(code)


def _is_http_url(value: object) -> bool:
    return isinstance(value, str) and urlsplit(value).scheme in ("http", "https") and bool(urlsplit(value).netloc)


def parse_submission_key(body: object) -> tuple[str, str]:
    """`(submitter, submissionId)` of a `$bulk-submit-status` request."""
    request = parse_submit_request(body)
    return request.submitter, request.submission_id


def _source_problems(urls) -> list[str]:
    problems = []
    for url in urls:
        try:
            check_source(url)
        except InvalidImportRequest as error:
            problems.append(error.message)
    return problems


def _positive_int(value: object, name: str, problems: list[str]) -> int:
    try:
        number = int(str(value))
    except ValueError:
        number = 0
    if not 1 <= number <= 100_000:
        problems.append(f"{name} must be an integer from 1 to 100000, got {value!r}")
        return 0
    return number
