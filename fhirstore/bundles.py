"""Transaction and batch Bundles (`POST [base]`).

A transaction is all or nothing, processed as the spec orders it: every entry's identity is settled first
(new ids for creates, conditional creates/updates/deletes searched), then `urn:uuid:` and conditional
references are rewritten to `Type/id`, every resource is checked, and the writes go to the database in one
transaction — deletes, then all creates and updates as one `save_resources` batch, then reads. A failing
entry fails the whole bundle with its own status. A batch runs each entry on its own, and a failing entry
gets its error in its response entry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import parse_qsl

from django.conf import settings
from django.db import transaction

from fhirstore.authority import WriteAuthority
from fhirstore.exceptions import FhirStoreError, InvalidRequest, PreconditionFailed, UnknownResourceType
from fhirstore.fhirdates import format_instant
from fhirstore.interactions import prepare_resource
from fhirstore.references import is_conditional_reference
from fhirstore.resource_types import is_resource_type, is_valid_id
from fhirstore.responses import operation_outcome, searchset_bundle
from fhirstore.search import find_logical_ids, parse_search, resolve_conditional_reference, run_search, search_page
from fhirstore.storage import (
    StoredVersion,
    Write,
    delete_resource,
    new_logical_id,
    read_resource,
    read_version,
    save_resources,
    version_from_etag,
)
from fhirstore.validation import check_resource_type

METHODS = ("DELETE", "POST", "PUT", "GET")  # the order a transaction processes its entries in


@dataclass
class _Entry:
    index: int
    method: str
    resource_type: str
    logical_id: str | None = None  # from the URL, or assigned
    query: str | None = None  # conditional URL / ifNoneExist, or a GET search
    version_id: int | None = None  # GET …/_history/v
    resource: dict | None = None
    full_url: str | None = None
    if_match: int | None = None
    response: dict = field(default_factory=dict)
    skip_write: bool = False  # conditional create that matched, conditional delete that matched nothing


def process_bundle(bundle: object, *, authority: WriteAuthority, base_url: str = "") -> dict:
    """Process a transaction or batch Bundle and return its transaction-response / batch-response; each write
    and delete is checked against the caller's `authority` in `storage`."""
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise InvalidRequest("POST to the base URL takes a Bundle of type transaction or batch")
    kind = bundle.get("type")
    entries = bundle.get("entry") or []
    if kind not in ("transaction", "batch") or not isinstance(entries, list):
        raise InvalidRequest(f"Bundle type must be transaction or batch, not {kind!r}")
    if kind == "transaction":
        responses = process_transaction(entries, authority=authority, base_url=base_url)
    else:
        responses = process_batch(entries, authority=authority, base_url=base_url)
    return {"resourceType": "Bundle", "type": f"{kind}-response", "entry": responses}


def process_transaction(raw_entries: list, *, authority: WriteAuthority, base_url: str = "") -> list[dict]:
    """All the entries or none: the response entries, in request order."""
    entries = [_parse_entry(i, raw) for i, raw in enumerate(raw_entries)]
    with transaction.atomic():
        references: dict[str, str] = {}
        for entry in entries:
            _at(entry, _settle_identity, entry, references)
        _refuse_duplicate_targets(entries)
        resolve = _transaction_resolver(references)
        for entry in entries:
            if entry.resource is not None and not entry.skip_write:
                _at(entry, prepare_resource, entry.resource, resolve)
        for entry in entries:
            if entry.method == "DELETE" and not entry.skip_write:
                _at(entry, _delete, entry, authority)
        writes = [e for e in entries if e.method in ("POST", "PUT") and not e.skip_write]
        stored = save_resources([Write(e.resource, e.if_match) for e in writes], authority=authority)
        for entry, version in zip(writes, stored):
            entry.response = _write_response(version)
        for entry in entries:
            if entry.method == "GET":
                _at(entry, _read, entry, base_url)
    return [entry.response for entry in entries]


def process_batch(raw_entries: list, *, authority: WriteAuthority, base_url: str = "") -> list[dict]:
    """Each entry on its own; a failure becomes that entry's response."""
    responses = []
    for index, raw in enumerate(raw_entries):
        try:
            entry = _parse_entry(index, raw)
            with transaction.atomic():
                _settle_identity(entry, {})
                if entry.method == "DELETE" and not entry.skip_write:
                    _delete(entry, authority)
                elif entry.method in ("POST", "PUT") and not entry.skip_write:
                    prepare_resource(entry.resource)
                    entry.response = _write_response(
                        save_resources([Write(entry.resource, entry.if_match)], authority=authority)[0]
                    )
                elif entry.method == "GET":
                    _read(entry, base_url)
            responses.append(entry.response)
        except FhirStoreError as error:
            responses.append({"response": {"status": _status_line(error.status), "outcome": operation_outcome(error)}})
    return responses


def _parse_entry(index: int, raw: object) -> _Entry:
    try:
        request = raw.get("request") if isinstance(raw, dict) else None
        if not isinstance(request, dict) or not isinstance(request.get("url"), str):
            raise InvalidRequest("has no request.url")
        method = request.get("method")
        if method not in METHODS:
            raise InvalidRequest(f"request.method {method!r} is not supported (use {', '.join(METHODS)})")
        path, _, query = request["url"].lstrip("/").partition("?")
        parts = path.split("/")
        if not is_resource_type(parts[0]):
            raise UnknownResourceType(f"Unknown resource type in request.url {request['url']!r}")
        entry = _Entry(index, method, parts[0], full_url=raw.get("fullUrl"), query=query or None)
        entry.if_match = version_from_etag(request.get("ifMatch"))
        if len(parts) >= 2:
            if not is_valid_id(parts[1]) or len(parts) not in (2, 4) or (len(parts) == 4 and parts[2] != "_history"):
                raise InvalidRequest(f"request.url {request['url']!r} is not Type, Type/id or Type/id/_history/v")
            entry.logical_id = parts[1]
            if len(parts) == 4:
                entry.version_id = version_from_etag(parts[3])
        if method in ("POST", "PUT"):
            entry.resource = check_resource_type(raw.get("resource"), entry.resource_type)
            if method == "POST":
                if entry.logical_id:
                    raise InvalidRequest("POST creates: request.url must be a type, without an id")
                entry.query = request.get("ifNoneExist") or None
            elif entry.logical_id is None and entry.query is None:
                raise InvalidRequest("PUT needs request.url Type/id or Type?search")
        elif method == "DELETE" and entry.logical_id is None and entry.query is None:
            raise InvalidRequest("DELETE needs request.url Type/id or Type?search")
        return entry
    except FhirStoreError as error:
        raise type(error)(f"Bundle.entry[{index}]: {error.message}") from error


def _settle_identity(entry: _Entry, references: dict[str, str]) -> None:
    """Decide which resource the entry is about, and record what its fullUrl now stands for."""
    if entry.method == "POST":
        matches = find_logical_ids(f"{entry.resource_type}?{entry.query}") if entry.query else []
        if len(matches) > 1:
            raise PreconditionFailed(f"ifNoneExist {entry.query!r} matches more than one resource")
        if matches:
            entry.logical_id, entry.skip_write = matches[0], True
            entry.response = _write_response(read_resource(entry.resource_type, matches[0]), status="200 OK")
        else:
            entry.logical_id = new_logical_id()
            entry.resource["id"] = entry.logical_id
    elif entry.method in ("PUT", "DELETE") and entry.logical_id is None:
        matches = find_logical_ids(f"{entry.resource_type}?{entry.query}")
        if len(matches) > 1:
            raise PreconditionFailed(f"Conditional {entry.method} {entry.query!r} matches more than one resource")
        if entry.method == "DELETE":
            entry.logical_id = matches[0] if matches else None
            entry.skip_write = not matches
            entry.response = {"response": {"status": "204 No Content"}}
        else:
            entry.logical_id = matches[0] if matches else entry.resource.get("id") or new_logical_id()
            entry.resource["id"] = entry.logical_id
    if entry.method == "PUT" and entry.resource.get("id") != entry.logical_id:
        raise InvalidRequest(f"The resource id {entry.resource.get('id')!r} must be the URL's {entry.logical_id!r}")
    if entry.full_url and entry.logical_id and entry.method in ("POST", "PUT"):
        references[entry.full_url] = f"{entry.resource_type}/{entry.logical_id}"


def _transaction_resolver(references: dict[str, str]) -> Callable[[str], str | None]:
    resolved: dict[str, str] = {}

    def resolve(reference: str) -> str | None:
        if reference in references:
            return references[reference]
        if is_conditional_reference(reference):
            if reference not in resolved:
                resolved[reference] = resolve_conditional_reference(reference)
            return resolved[reference]
        return None

    return resolve


def _refuse_duplicate_targets(entries: list[_Entry]) -> None:
    seen: dict[tuple[str, str], int] = {}
    for entry in entries:
        if entry.method == "GET" or entry.skip_write:
            continue
        key = (entry.resource_type, entry.logical_id)
        if key in seen:
            raise InvalidRequest(
                f"Bundle.entry[{entry.index}] and Bundle.entry[{seen[key]}] both change {key[0]}/{key[1]}"
            )
        seen[key] = entry.index


def _delete(entry: _Entry, authority: WriteAuthority) -> None:
    deletion = delete_resource(entry.resource_type, entry.logical_id, authority=authority, if_match=entry.if_match)
    entry.response = (
        {"response": {"status": "204 No Content"}}
        if deletion is None
        else {
            "response": {
                "status": "204 No Content",
                "etag": deletion.etag,
                "lastModified": format_instant(deletion.last_updated),
            }
        }
    )


def _read(entry: _Entry, base_url: str) -> None:
    if entry.logical_id is None:
        search = parse_search(entry.resource_type, parse_qsl(entry.query or "", keep_blank_values=True))
        count = search.count if search.count is not None else settings.FHIR_DEFAULT_PAGE_SIZE
        page = search_page(run_search(search), 0, count)
        entry.response = {"resource": searchset_bundle(page, base_url), "response": {"status": "200 OK"}}
        return
    version = (
        read_version(entry.resource_type, entry.logical_id, entry.version_id)
        if entry.version_id
        else read_resource(entry.resource_type, entry.logical_id)
    )
    entry.response = {"resource": version.body, **_write_response(version, status="200 OK")}


def _write_response(version: StoredVersion, status: str | None = None) -> dict:
    return {
        "response": {
            "status": status or ("201 Created" if version.created else "200 OK"),
            "location": version.versioned_reference,
            "etag": version.etag,
            "lastModified": format_instant(version.last_updated),
        }
    }


def _at(entry: _Entry, function: Callable, *args):
    """Run `function`, naming the entry in the message of any error it raises."""
    try:
        return function(*args)
    except FhirStoreError as error:
        located = type(error)(f"Bundle.entry[{entry.index}]: {error.message}")
        if hasattr(error, "problems"):
            located.problems = [f"Bundle.entry[{entry.index}]: {problem}" for problem in error.problems]
        raise located from error


def _status_line(status: int) -> str:
    return f"{status} {HTTPStatus(status).phrase}"
