"""The `$upload-external-code-system` request (a FHIR `Parameters`) as a typed request, checked at kick-off.

`system` (uri), one or more `file` (Attachment: `url` — http(s) under BULK_IMPORT_ALLOWED_SOURCES, or
file:// under BULK_IMPORT_FILE_ROOT, as the import's sources — or inline base64 `data`), and optionally
`version` (the label of the new version; default the one the file declares) and `makeCurrent` (boolean,
default true). Every problem is reported at once, before anything is fetched or started.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from fhirjobs.common.sources import SourceNotAllowed, check_source
from fhirjobs.terminology.exceptions import InvalidUploadRequest
from fhirjobs.terminology.loaders import loader_for


@dataclass(frozen=True)
class UploadFile:
    """A file of the upload: a URL to read, or inline content."""

    name: str
    url: str = ""
    data: bytes | None = None


@dataclass(frozen=True)
class UploadRequest:
    system: str
    files: tuple[UploadFile, ...]
    version: str = ""  # empty: the file's own
    make_current: bool = True


def _value(parameter: dict[str, Any]) -> Any:
    return next((value for name, value in parameter.items() if name.startswith("value")), None)


def parse_upload_request(body: object) -> UploadRequest:
    """InvalidUploadRequest listing every problem of the body."""
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise InvalidUploadRequest(["$upload-external-code-system takes a Parameters resource"])
    system, version, make_current, files, problems = "", "", True, [], []
    for parameter in body.get("parameter") or []:
        if not isinstance(parameter, dict):
            problems.append("every parameter must be an object")
            continue
        name, value = parameter.get("name"), _value(parameter)
        if name == "system" and isinstance(value, str) and value:
            system = value
        elif name == "version" and isinstance(value, str) and value:
            version = value
        elif name == "makeCurrent" and isinstance(value, bool):
            make_current = value
        elif name == "file" and isinstance(value, dict):
            files.append(_file(value, len(files) + 1, problems))
        else:
            problems.append(
                f"parameter {name!r} is not understood (system, file, version, makeCurrent) or has no "
                f"value of the right type"
            )
    if not system:
        problems.append("system is required")
    if not files:
        problems.append("at least one file is required")
    request = UploadRequest(system, tuple(files), version, make_current)
    if system and files:
        problems += loader_for(system).file_problems([f.name for f in files])
    if problems:
        raise InvalidUploadRequest(problems)
    return request


def _file(attachment: dict[str, Any], number: int, problems: list[str]) -> UploadFile:
    name = str(attachment.get("title") or attachment.get("url") or f"file {number}")  # custom CSV: by name
    if attachment.get("data"):
        try:
            return UploadFile(name, data=base64.b64decode(attachment["data"], validate=True))
        except (binascii.Error, ValueError, TypeError):
            problems.append(f"{name}: data is not base64")
            return UploadFile(name)
    url = attachment.get("url")
    if not isinstance(url, str) or not url:
        problems.append(f"{name}: a file needs a url or data")
        return UploadFile(name)
    try:
        check_source(url)
    except SourceNotAllowed as error:
        problems.append(error.message)
    return UploadFile(name, url=url)
