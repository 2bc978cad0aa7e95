"""Reading the store in bulk: keyset pages of ids, Patient compartments, bodies by id.

This is what the Bulk Data `$export` job builds on. Every function reads current versions only
(deleted resources are left out), pages by keyset on the logical id (`WHERE logical_id > after ORDER BY
logical_id LIMIT n`, an index-only scan of the `(resource_type, logical_id)` index), and never holds more
than one page in memory. `filters` take the `Q`s of `search.search_filter` / `search.type_filter`; a
resource passes when it matches any of them (the `_typeFilter`s of one type are ORed).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import datetime

from django.db import connection
from django.db.models import Q, QuerySet

from fhirstore.exceptions import ResourceGone, ResourceNotFound
from fhirstore.models import ReferenceIndex, Resource
from fhirstore.search_params import parse_relative_reference, patient_compartment_params

ID_PAGE_SIZE = 1000  # ids per page: the bulk export's chunk size, as HAPI's


def resource_ids_page(resource_type: str, *, after: str | None = None, since: datetime | None = None,
                      filters: Sequence[Q] = (), limit: int = ID_PAGE_SIZE) -> list[str]:
    """The next `limit` ids of a type in id order, after `after`; changed at or after `since` if given."""
    return _page(_current(resource_type, since, filters), after, limit)


def iter_resource_id_pages(resource_type: str, *, since: datetime | None = None, filters: Sequence[Q] = (),
                           page_size: int = ID_PAGE_SIZE) -> Iterator[list[str]]:
    """Every id of a type (changed since `since`), page by page, in id order."""
    return _pages(lambda after: resource_ids_page(resource_type, after=after, since=since, filters=filters,
                                                  limit=page_size))


def compartment_ids_page(resource_type: str, patient_ids: Sequence[str], *, after: str | None = None,
                         since: datetime | None = None, filters: Sequence[Q] = (),
                         limit: int = ID_PAGE_SIZE) -> list[str]:
    """The next ids of a type in the Patient compartments of `patient_ids`, in id order, after `after`.

    A resource is in a patient's compartment when one of its compartment references (see
    `search_params.patient_compartment_params`) points at that Patient; the Patients themselves are in
    their own compartments. Types outside the Patient compartment have no ids here.
    """
    resources = _current(resource_type, since, filters)
    if resource_type == "Patient":
        links = ReferenceIndex.objects.filter(resource_type="Patient", param="link", target_type="Patient",
                                              target_id__in=patient_ids).values("resource_id")
        resources = resources.filter(Q(logical_id__in=patient_ids) | Q(pk__in=links))
    else:
        params = patient_compartment_params(resource_type)
        if not params:
            return []
        links = ReferenceIndex.objects.filter(target_id__in=patient_ids, target_type="Patient",
                                              resource_type=resource_type, param__in=params).values("resource_id")
        resources = resources.filter(pk__in=links)
    return _page(resources, after, limit)


def iter_compartment_id_pages(resource_type: str, patient_ids: Sequence[str], *, since: datetime | None = None,
                              filters: Sequence[Q] = (), page_size: int = ID_PAGE_SIZE) -> Iterator[list[str]]:
    """Every id of a type in the compartments of `patient_ids`, page by page, in id order."""
    return _pages(lambda after: compartment_ids_page(resource_type, patient_ids, after=after, since=since,
                                                     filters=filters, limit=page_size))


def current_bodies(resource_type: str, ids: Sequence[str]) -> list[dict]:
    """The current bodies of these ids, in id order; deleted and unknown ids are left out."""
    return list(Resource.objects.filter(resource_type=resource_type, logical_id__in=list(ids), deleted=False)
                .order_by("logical_id").values_list("body", flat=True))


def current_bodies_json(resource_type: str, ids: Sequence[str]) -> list[str]:
    """As `current_bodies`, but each body as one line of JSON text, ready for NDJSON (no parsing in Python)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT body::text FROM fhirstore_resource WHERE resource_type = %s AND logical_id = ANY(%s)"
            " AND NOT deleted ORDER BY logical_id", [resource_type, list(ids)],
        )
        return [body for (body,) in cursor.fetchall()]


def missing_ids(resource_type: str, ids: Sequence[str]) -> list[str]:
    """Those of `ids` that are not current resources of the type (unknown or deleted), sorted."""
    present = set(Resource.objects.filter(resource_type=resource_type, logical_id__in=list(ids), deleted=False)
                  .values_list("logical_id", flat=True))
    return sorted(set(ids) - present)


def group_patient_ids(group_id: str) -> list[str]:
    """The ids of the Patients a Group lists in `member.entity`, sorted; 404/410 for an unknown/deleted Group."""
    row = Resource.objects.filter(resource_type="Group", logical_id=group_id).values_list("deleted", "body").first()
    if row is None:
        raise ResourceNotFound(f"Group/{group_id} is not known")
    if row[0]:
        raise ResourceGone(f"Group/{group_id} was deleted")
    patients = set()
    for member in row[1].get("member", []):
        target = parse_relative_reference(((member or {}).get("entity") or {}).get("reference", ""))
        if target and target[0] == "Patient":
            patients.add(target[1])
    return sorted(patients)


def _current(resource_type: str, since: datetime | None, filters: Sequence[Q]) -> QuerySet[Resource]:
    resources = Resource.objects.filter(resource_type=resource_type, deleted=False)
    if since is not None:
        resources = resources.filter(last_updated__gte=since)
    if filters:
        matches_any = Q()
        for condition in filters:
            matches_any |= condition
        resources = resources.filter(matches_any)
    return resources


def _page(resources: QuerySet[Resource], after: str | None, limit: int) -> list[str]:
    if after is not None:
        resources = resources.filter(logical_id__gt=after)
    return list(resources.order_by("logical_id").values_list("logical_id", flat=True)[:limit])


def _pages(next_page: Callable[[str | None], list[str]]) -> Iterator[list[str]]:
    after = None
    while page := next_page(after):
        yield page
        after = page[-1]
