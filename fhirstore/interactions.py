"""The FHIR write interactions on one resource — create, update, conditional update, delete — as plain
functions the REST views call. Each runs in its own transaction; bundles and bulk loads batch their
writes through `storage.save_resources` directly.
"""

from __future__ import annotations

from collections.abc import Callable

from django.db import transaction

from fhirstore.authority import WriteAuthority
from fhirstore.exceptions import InvalidRequest, PreconditionFailed
from fhirstore.references import is_conditional_reference, rewrite_references
from fhirstore.search import find_logical_ids, resolve_conditional_reference
from fhirstore.storage import StoredVersion, Write, delete_resource, new_logical_id, read_resource, save_resources
from fhirstore.validation import check_resource, check_resource_type


def resolve_conditional_only(reference: str) -> str | None:
    """The resolver of a lone write: conditional references become `Type/id`; others stay as they are."""
    return resolve_conditional_reference(reference) if is_conditional_reference(reference) else None


def prepare_resource(resource: dict, resolve: Callable[[str], str | None] = resolve_conditional_only) -> dict:
    """Rewrite the references `resolve` knows, then check the resource (422 when it is not valid)."""
    check_resource(resource, rewrite_references(resource, resolve))
    return resource


def create_resource(
    resource_type: str, resource: object, *, authority: WriteAuthority, if_none_exist: str | None = None
) -> StoredVersion:
    """Create with a server-assigned id (a client's id is ignored, as the spec says).

    With `if_none_exist` (a query string), an existing match is returned instead (`created` False);
    several matches are a 412.
    """
    resource = check_resource_type(resource, resource_type)
    with transaction.atomic():
        if if_none_exist:
            matches = find_logical_ids(f"{resource_type}?{if_none_exist}")
            if len(matches) > 1:
                raise PreconditionFailed(f"If-None-Exist {if_none_exist!r} matches more than one resource")
            if matches:
                return read_resource(resource_type, matches[0])
        resource["id"] = new_logical_id()
        prepare_resource(resource)
        return save_resources([Write(resource)], authority=authority)[0]


def update_resource(
    resource_type: str, logical_id: str, resource: object, *, authority: WriteAuthority, if_match: int | None = None
) -> StoredVersion:
    """Replace (or create with the client's id); the body's id must be the URL's."""
    resource = check_resource_type(resource, resource_type)
    if resource.get("id") != logical_id:
        raise InvalidRequest(f"The resource id {resource.get('id')!r} must match the id in the URL {logical_id!r}")
    prepare_resource(resource)
    with transaction.atomic():
        return save_resources([Write(resource, if_match=if_match)], authority=authority)[0]


def conditional_update(resource_type: str, query: str, resource: object, *, authority: WriteAuthority) -> StoredVersion:
    """Update the one resource matching `query`, or create one when none does; 412 when several do."""
    resource = check_resource_type(resource, resource_type)
    with transaction.atomic():
        matches = find_logical_ids(f"{resource_type}?{query}")
        if len(matches) > 1:
            raise PreconditionFailed(f"Conditional update {query!r} matches more than one resource")
        if matches and resource.get("id") not in (None, matches[0]):
            raise InvalidRequest(f"The resource id {resource['id']!r} is not the matching resource's {matches[0]!r}")
        resource["id"] = matches[0] if matches else resource.get("id") or new_logical_id()
        prepare_resource(resource)
        return save_resources([Write(resource)], authority=authority)[0]


def delete(
    resource_type: str, logical_id: str, *, authority: WriteAuthority, if_match: int | None = None
) -> StoredVersion | None:
    """Delete; None when it was deleted already."""
    with transaction.atomic():
        return delete_resource(resource_type, logical_id, authority=authority, if_match=if_match)
