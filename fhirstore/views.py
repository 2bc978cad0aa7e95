"""The FHIR REST API under `/fhir`: thin views over `interactions`, `storage`, `search` and `bundles`."""

from __future__ import annotations

from urllib.parse import parse_qsl

from django.conf import settings

from fhirstore import interactions
from fhirstore.bundles import process_bundle
from fhirstore.capability import capability_statement
from fhirstore.exceptions import InvalidRequest, ResourceNotFound, UnknownResourceType
from fhirstore.fhirdates import parse_date_range
from fhirstore.http import (
    FhirView,
    base_url,
    fhir_response,
    if_match_version,
    read_form_body,
    read_json_body,
    version_headers,
    wants_minimal,
    write_authority,
)
from fhirstore.resource_types import is_resource_type
from fhirstore.responses import history_bundle, outcome, searchset_bundle
from fhirstore.search import parse_search, run_search, search_page
from fhirstore.storage import StoredVersion, read_resource, read_version, resource_history
from jobsite.models import Scope


def _known_type(resource_type: str) -> str:
    if not is_resource_type(resource_type):
        raise UnknownResourceType(f"Unknown resource type {resource_type!r}")
    return resource_type


def _query_pairs(query_dict) -> list[tuple[str, str]]:
    return [(name, value) for name, values in query_dict.lists() for value in values]


def _int_param(request, name: str, default: int, maximum: int | None = None) -> int:
    raw = request.GET.get(name)
    if raw is None:
        return default
    if not raw.isdigit():
        raise InvalidRequest(f"{name} must be a whole number, got {raw!r}")
    return min(int(raw), maximum) if maximum is not None else int(raw)


def _written(request, version: StoredVersion) -> object:
    headers = version_headers(version)
    headers["Location"] = f"{base_url(request)}/{version.versioned_reference}"
    body = None if wants_minimal(request) else version.body
    return fhir_response(body, status=201 if version.created else 200, headers=headers)


def _search(request, resource_type: str, params: list[tuple[str, str]]):
    search = parse_search(resource_type, params)
    count = search.count if search.count is not None else settings.FHIR_DEFAULT_PAGE_SIZE
    page = search_page(run_search(search), 0, count)
    bundle = searchset_bundle(page, base_url(request))
    bundle["entry"] += [
        {"resource": outcome("warning", "incomplete", warning), "search": {"mode": "outcome"}}
        for warning in search.warnings
    ]
    return fhir_response(bundle)


class SystemView(FhirView):
    """`POST /fhir`: a transaction or batch Bundle. `GET /fhir?_getpages=…`: a page of a cached search."""

    def get(self, request):
        search_id = request.GET.get("_getpages")
        if not search_id:
            raise InvalidRequest("Searching across all types is not supported; search one type: /fhir/Type?…")
        offset = _int_param(request, "_getpagesoffset", 0)
        count = _int_param(request, "_count", settings.FHIR_DEFAULT_PAGE_SIZE, settings.FHIR_MAX_PAGE_SIZE)
        return fhir_response(searchset_bundle(search_page(search_id, offset, count), base_url(request)))

    def post(self, request):
        return fhir_response(
            process_bundle(read_json_body(request), authority=write_authority(request), base_url=base_url(request))
        )


class MetadataView(FhirView):
    """The CapabilityStatement is public, as clients read it before they authenticate (SMART discovery)."""

    permission_classes: list = []

    def get(self, request):
        return fhir_response(capability_statement(base_url(request)))


class TypeView(FhirView):
    """`GET /fhir/T?…` search, `POST /fhir/T` create, `PUT /fhir/T?…` conditional update."""

    def get(self, request, resource_type: str):
        return _search(request, _known_type(resource_type), _query_pairs(request.GET))

    def post(self, request, resource_type: str):
        version = interactions.create_resource(
            _known_type(resource_type),
            read_json_body(request),
            authority=write_authority(request),
            if_none_exist=request.headers.get("If-None-Exist"),
        )
        return _written(request, version)

    def put(self, request, resource_type: str):
        _known_type(resource_type)
        query = request.META.get("QUERY_STRING", "")
        if not query:
            raise InvalidRequest("PUT needs an id (/fhir/T/id) or search parameters (/fhir/T?…)")
        return _written(
            request,
            interactions.conditional_update(
                resource_type, query, read_json_body(request), authority=write_authority(request)
            ),
        )


class TypeSearchView(FhirView):
    """`POST /fhir/T/_search` with form-encoded parameters: a read, whatever the method."""

    required_scope = Scope.FHIR_READ

    def post(self, request, resource_type: str):
        _known_type(resource_type)
        form = parse_qsl(read_form_body(request), keep_blank_values=True)
        return _search(request, resource_type, _query_pairs(request.GET) + form)


class InstanceView(FhirView):
    """`GET` read, `PUT` update (or create with the client's id), `DELETE` of `/fhir/T/id`."""

    def get(self, request, resource_type: str, logical_id: str):
        version = read_resource(_known_type(resource_type), logical_id)
        return fhir_response(version.body, headers=version_headers(version))

    def put(self, request, resource_type: str, logical_id: str):
        version = interactions.update_resource(
            _known_type(resource_type),
            logical_id,
            read_json_body(request),
            authority=write_authority(request),
            if_match=if_match_version(request),
        )
        return _written(request, version)

    def delete(self, request, resource_type: str, logical_id: str):
        deletion = interactions.delete(
            _known_type(resource_type),
            logical_id,
            authority=write_authority(request),
            if_match=if_match_version(request),
        )
        if deletion is None:
            return fhir_response(
                outcome("information", "informational", f"{resource_type}/{logical_id} was already deleted")
            )
        return fhir_response(
            outcome("information", "informational", f"Deleted {resource_type}/{logical_id}"),
            headers={"ETag": deletion.etag},
        )


class HistoryView(FhirView):
    """`GET /fhir/T/id/_history` with `_count`, `_offset`, `_since`."""

    def get(self, request, resource_type: str, logical_id: str):
        _known_type(resource_type)
        count = _int_param(request, "_count", settings.FHIR_DEFAULT_PAGE_SIZE, settings.FHIR_MAX_PAGE_SIZE)
        offset = _int_param(request, "_offset", 0)
        since_text = request.GET.get("_since")
        since = None
        if since_text:
            covered = parse_date_range(since_text)
            if covered is None:
                raise InvalidRequest(f"_since={since_text!r} is not an instant")
            since = covered[0]
        total, versions = resource_history(resource_type, logical_id, since=since, offset=offset, count=count)
        return fhir_response(
            history_bundle(
                resource_type,
                logical_id,
                total,
                versions,
                base_url=base_url(request),
                offset=offset,
                count=count,
                since=since_text,
            )
        )


class VersionView(FhirView):
    """`GET /fhir/T/id/_history/v` (vread)."""

    def get(self, request, resource_type: str, logical_id: str, version_id: int):
        version = read_version(_known_type(resource_type), logical_id, version_id)
        return fhir_response(version.body, headers=version_headers(version))


class NotFoundView(FhirView):
    """Anything else under /fhir: a 404 OperationOutcome rather than an HTML page."""

    permission_classes: list = []

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        raise ResourceNotFound(f"No FHIR endpoint at {request.path}")
