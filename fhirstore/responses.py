"""The FHIR documents the store answers with: OperationOutcome, searchset and history Bundles."""

from __future__ import annotations

from urllib.parse import urlencode

from django.utils import timezone

from fhirstore.exceptions import FhirStoreError
from fhirstore.fhirdates import format_instant
from fhirstore.search import SearchPage
from fhirstore.storage import StoredVersion


def operation_outcome(error: FhirStoreError) -> dict:
    """The OperationOutcome reporting `error`: one issue per problem found."""
    problems = getattr(error, "problems", [error.message])
    return outcome("error", error.issue_code, *problems)


def outcome(severity: str, code: str, *diagnostics: str) -> dict:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": severity, "code": code, "diagnostics": text} for text in diagnostics],
    }


def page_url(base_url: str, search_id: object, offset: int, count: int) -> str:
    """The link to one page of a cached search (HAPI's form, which clients know)."""
    return f"{base_url}?" + urlencode(
        {"_getpages": str(search_id), "_getpagesoffset": offset, "_count": count, "_bundletype": "searchset"}
    )


def searchset_bundle(page: SearchPage, base_url: str) -> dict:
    """A page of search results, with `self`, `next` and `previous` links into the search result cache."""
    if page.offset == 0:
        links = [{"relation": "self", "url": f"{base_url}/{page.resource_type}?{page.query}"}]
    else:
        links = [{"relation": "self", "url": page_url(base_url, page.search_id, page.offset, page.count)}]
    if page.count and page.offset + page.count < page.total:
        links.append(
            {"relation": "next", "url": page_url(base_url, page.search_id, page.offset + page.count, page.count)}
        )
    if page.count and page.offset > 0:
        links.append(
            {
                "relation": "previous",
                "url": page_url(base_url, page.search_id, max(0, page.offset - page.count), page.count),
            }
        )
    entries = [
        {"fullUrl": f"{base_url}/{page.resource_type}/{body['id']}", "resource": body, "search": {"mode": "match"}}
        for body in page.resources
    ]
    bundle = {
        "resourceType": "Bundle",
        "id": str(page.search_id),
        "meta": {"lastUpdated": format_instant(timezone.now())},
        "type": "searchset",
    }
    if page.truncated:
        entries.append(
            {
                "resource": outcome(
                    "warning",
                    "too-costly",
                    f"More than {page.total} resources match; only the first {page.total} are kept. Narrow the search.",
                ),
                "search": {"mode": "outcome"},
            }
        )
    else:
        bundle["total"] = page.total
    return {**bundle, "link": links, "entry": entries}


def history_bundle(
    resource_type: str,
    logical_id: str,
    total: int,
    versions: list[StoredVersion],
    *,
    base_url: str,
    offset: int,
    count: int,
    since: str | None,
) -> dict:
    """A page of one resource's versions, newest first, with `next` / `previous` links."""
    path = f"{base_url}/{resource_type}/{logical_id}/_history"

    def link(relation: str, at: int) -> dict:
        query = {"_count": count, "_offset": at, **({"_since": since} if since else {})}
        return {"relation": relation, "url": f"{path}?{urlencode(query)}"}

    links = [link("self", offset)]
    if offset + count < total:
        links.append(link("next", offset + count))
    if offset > 0:
        links.append(link("previous", max(0, offset - count)))
    return {
        "resourceType": "Bundle",
        "type": "history",
        "total": total,
        "link": links,
        "entry": [_history_entry(version, base_url) for version in versions],
    }


def _history_entry(version: StoredVersion, base_url: str) -> dict:
    reference = f"{version.resource_type}/{version.logical_id}"
    if version.deleted:
        request, status = {"method": "DELETE", "url": reference}, "204 No Content"
    elif version.version_id == 1:
        request, status = {"method": "POST", "url": version.resource_type}, "201 Created"
    else:
        request, status = {"method": "PUT", "url": reference}, "200 OK"
    entry = {"fullUrl": f"{base_url}/{reference}"}
    if version.body is not None:
        entry["resource"] = version.body
    return {
        **entry,
        "request": request,
        "response": {"status": status, "etag": version.etag, "lastModified": format_instant(version.last_updated)},
    }
