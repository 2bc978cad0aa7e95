"""Reading the store in bulk: keyset pages of ids, Patient compartments, bodies by id.

This is what the jobs that walk the store build on (`$export`; the range walk of `fhirjobs.common.ranges`). Every function reads current versions only
(deleted resources are left out), pages by keyset on the logical id (`WHERE logical_id > after ORDER BY
logical_id LIMIT n`, an index-only scan of the `(resource_type, logical_id)` index), and never holds more
than one page in memory.

`until` reads the store as it was at that instant instead (a `storage.settled_time()`): a resource changed
later counts in the version it had then (from the history), one created later not at all, one deleted later
still. Nothing committed later changes what such a read returns, so a walk run twice pages the same way.
Filters and compartments are still decided by the current index rows (only the rare resource changed or
reindexed after `until` could be judged by its newer rows; one deleted since has none, and
`compartment_members_deleted_after` judges it by its version of `until`), so a walk of a selection judged by them is not
repeatable page by page: `iter_resource_id_ranges` gives the fixed bounds (every id current at `until`) to cut
such a walk at (the bulk export's `selection.pages_within_ranges`), where keyset pages of the selection would
shift when a resource joins or leaves it. `filters` take the `Q`s of `search.search_filter` / `search.type_filter`; a
resource passes when it matches any of them (the `_typeFilter`s of one type are ORed).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import NamedTuple

import psycopg
from django.db import connection
from django.db.models import OuterRef, Q, QuerySet, Subquery
from django.db.models.expressions import RawSQL

from fhirstore.custom_params import current_registry
from fhirstore.exceptions import ResourceGone, ResourceNotFound
from fhirstore.models import ReferenceIndex, Resource, ResourceVersion
from fhirstore.resource_types import RESOURCE_TYPES
from fhirstore.search_params import IndexRows, parse_relative_reference, patient_compartment_params

ID_PAGE_SIZE = 1000  # ids per page: the bulk export's chunk size, as HAPI's


def resource_ids_page(
    resource_type: str,
    *,
    after: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    filters: Sequence[Q] = (),
    limit: int = ID_PAGE_SIZE,
) -> list[str]:
    """The next `limit` ids of a type in id order, after `after`; changed at or after `since` if given."""
    return _page(current_resources(resource_type, since=since, until=until, filters=filters), after, limit)


def iter_resource_id_pages(
    resource_type: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    filters: Sequence[Q] = (),
    page_size: int = ID_PAGE_SIZE,
) -> Iterator[list[str]]:
    """Every id of a type (changed since `since`), page by page, in id order."""
    return _pages(
        lambda after: resource_ids_page(
            resource_type, after=after, since=since, until=until, filters=filters, limit=page_size
        )
    )


def id_after(resource_type: str, after: str | None, *, offset: int) -> str | None:
    """The current or deleted id `offset` places after `after` in id order (an index-only scan), None past the
    last one: the boundaries of ranges of ids, each read later by a keyset walk of its own."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT logical_id FROM {Resource._meta.db_table} WHERE resource_type = %s"
            f"{' AND logical_id > %s' if after is not None else ''} ORDER BY logical_id OFFSET %s LIMIT 1",
            [resource_type, *([after] if after is not None else []), offset],
        )
        row = cursor.fetchone()
    return row[0] if row else None


def key_span(resource_type: str) -> tuple[int, int, int]:
    """(lowest, highest, count) of the row keys (`fhirstore_resource.id`) of a type's current and deleted rows;
    (0, 0, 0) for a type without any. Rows are stored in key order as they are written, so a range of keys is
    a run of neighbouring pages (`fhirjobs.common.ranges`' key walk). The ends are read from whichever index
    the planner finds cheaper (the primary key from either end for a common type, the type's for a rare one)."""
    table = Resource._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT (SELECT id FROM {table} WHERE resource_type = %(type)s ORDER BY id LIMIT 1),"
            f" (SELECT id FROM {table} WHERE resource_type = %(type)s ORDER BY id DESC LIMIT 1),"
            f" (SELECT count(*) FROM {table} WHERE resource_type = %(type)s)",
            {"type": resource_type},
        )
        lowest, highest, count = cursor.fetchone()
    return (lowest, highest, count) if count else (0, 0, 0)


def stored_types() -> list[str]:
    """The resource types that have stored resources, sorted (one index probe per known type)."""
    return [t for t in sorted(RESOURCE_TYPES) if Resource.objects.filter(resource_type=t).exists()]


def iter_resource_id_ranges(
    resource_type: str, *, since: datetime | None = None, until: datetime, page_size: int = ID_PAGE_SIZE
) -> Iterator[tuple[str, str, int]]:
    """`(after, last, count)` per page of the ids current at `until` (changed at or after `since`), in id
    order: the page is the ids in `(after, last]`.

    Only a page's count and last id leave the database ("" is before the first). Nothing written later
    changes the pages: `range_bodies_ndjson` reads exactly their resources.
    """
    after = ""
    while True:
        with connection.cursor() as cursor:
            cursor.execute(
                RANGE_PAGE_SQL,
                {"type": resource_type, "after": after, "until": until, "since": since, "limit": page_size},
            )
            last, count = cursor.fetchone()
        if not count:
            return
        yield after, last, count
        after = last


# The ids current at `until`: those not changed since, an index-only range scan of (resource_type, logical_id)
# INCLUDE (last_updated, deleted); and the few changed since whose latest version up to `until` is not a
# deletion. `OFFSET 0` keeps the latter a scan of the (resource_type, last_updated) index: planned together
# with the ORDER BY logical_id, it would walk every later id of the type and its heap row on every page.
RANGE_PAGE_SQL = """
SELECT max(logical_id), count(*) FROM (
    SELECT logical_id FROM (
        (SELECT logical_id FROM fhirstore_resource
         WHERE resource_type = %(type)s AND logical_id > %(after)s AND last_updated <= %(until)s AND NOT deleted
           AND last_updated >= coalesce(%(since)s, '-infinity'::timestamptz)
         ORDER BY logical_id LIMIT %(limit)s)
        UNION ALL
        (SELECT r.logical_id FROM (SELECT id, logical_id FROM fhirstore_resource
                                   WHERE resource_type = %(type)s AND last_updated > %(until)s OFFSET 0) r
         WHERE r.logical_id > %(after)s
           AND (SELECT NOT v.deleted AND v.last_updated >= coalesce(%(since)s, '-infinity'::timestamptz)
                FROM fhirstore_resourceversion v WHERE v.resource_id = r.id AND v.last_updated <= %(until)s
                ORDER BY v.version_id DESC LIMIT 1)
         ORDER BY r.logical_id LIMIT %(limit)s)
    ) candidates ORDER BY logical_id LIMIT %(limit)s
) page
"""


def range_bodies_ndjson(
    resource_type: str, after: str, last: str, *, since: datetime | None, until: datetime
) -> tuple[int, bytes]:
    """`(count, NDJSON)`: the bodies, as they were at `until`, of the ids in `(after, last]` that were current then
    (and changed at or after `since`), one JSON text a line, in no particular order.

    Joined and UTF-8-encoded in the database and received in binary: the file's bytes arrive as they are, with
    no decoding, copying or encoding in Python.
    """
    connection.ensure_connection()
    with psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(
            RANGE_BODIES_SQL,
            {"type": resource_type, "after": after, "last": last, "until": until, "since": since},
            binary=True,
        )
        count, ndjson = cursor.fetchone()
    return count, ndjson


# In the order the heap gives them (sorting 5,000 bodies by id costs more than reading them, and spills to
# disk). A row changed after `until` is read in its latest version up to then (the lateral subquery is skipped for
# the others: its condition on the outer row is false), and only if that version is not a deletion.
# The body at `until`, and the rows it is read from: `old` is the latest version up to `until` of a row changed
# after it (NULL for the others).
BODY_AT_UNTIL = "CASE WHEN r.last_updated <= %(until)s THEN r.body::text ELSE old.body::text END"
ROWS_AT_UNTIL = """fhirstore_resource r
    LEFT JOIN LATERAL (
        SELECT v.body, v.deleted, v.last_updated FROM fhirstore_resourceversion v
        WHERE r.last_updated > %(until)s AND v.resource_id = r.id AND v.last_updated <= %(until)s
        ORDER BY v.version_id DESC LIMIT 1
    ) old ON true"""
RANGE_BODIES_SQL = f"""
SELECT count(*)::int, convert_to(coalesce(string_agg(body || E'\n', ''), ''), 'UTF8') FROM (
    SELECT r.logical_id, {BODY_AT_UNTIL} AS body
    FROM {ROWS_AT_UNTIL}
    WHERE r.resource_type = %(type)s AND r.logical_id > %(after)s AND r.logical_id <= %(last)s
      AND CASE WHEN r.last_updated <= %(until)s
               THEN NOT r.deleted AND r.last_updated >= coalesce(%(since)s, '-infinity'::timestamptz)
               ELSE NOT old.deleted AND old.last_updated >= coalesce(%(since)s, '-infinity'::timestamptz) END
) page
"""


def row_span(*, until: datetime) -> tuple[int, int] | None:
    """`(first, last)` row ids (`Resource.id`) of the resources that existed at `until`, or None when none did.

    A row id never changes, and rows created after `until` can only be skipped, so ranges of row ids cut from
    this span page the store as it was at `until` the same way however often they are cut. Both ends are an
    index scan of the primary key from its end that stops at the first row that existed then.
    """
    with connection.cursor() as cursor:
        cursor.execute(ROW_SPAN_SQL, {"until": until})
        first, last = cursor.fetchone()
    return None if first is None else (first, last)


ROW_SPAN_SQL = """
SELECT min(r.id), max(r.id) FROM fhirstore_resource r
WHERE r.last_updated <= %(until)s
   OR EXISTS (SELECT FROM fhirstore_resourceversion v WHERE v.resource_id = r.id AND v.last_updated <= %(until)s)
"""


def iter_row_ranges(*, until: datetime, width: int, first_width: int | None = None) -> Iterator[tuple[int, int]]:
    """`(after, last)` row id ranges of at most `width` ids each that cover every resource that existed at
    `until`, in row id order (see `row_span`); a range holds at most `width` resources, of any types. With
    `first_width`, the first range is that wide (when narrower), and the others start after it."""
    span = row_span(until=until)
    if span is None:
        return
    first, end = span
    start = first - 1
    if first_width is not None and first_width < width:
        yield start, min(start + first_width, end)
        start += first_width
    for after in range(start, end, width):
        yield after, min(after + width, end)


def row_range_bodies_ndjson(
    resource_types: Sequence[str], after: int, last: int, *, until: datetime
) -> list[tuple[str, int, bytes]]:
    """`(type, count, NDJSON)` per type of `resource_types` that has resources current at `until` among the
    rows `(after, last]`, in type order: their bodies as they were then, one JSON text a line, in no
    particular order.

    Row ids follow the order rows were created in, so a range is a nearly sequential read of a stretch of the
    table, read once for all the types in it: no type's rows are spread over the whole table, as a range of
    logical ids (random UUIDs) is. The rows arrive as `COPY` sends them, as PostgreSQL's own COPY of the table
    would, each as it is produced; Python only splits them by type (measured against joining them per type in
    the database with `string_agg`: 66-143 ms against 80-250 ms per 10,000 resources, on a loaded machine).
    """
    lines: dict[str, list[bytes]] = {}
    connection.ensure_connection()
    with psycopg.Cursor(connection.connection) as cursor:
        with cursor.copy(
            ROW_RANGE_BODIES_COPY, {"types": list(resource_types), "after": after, "last": last, "until": until}
        ) as copy:
            for row in copy:
                resource_type, _, line = bytes(row).partition(COPY_DELIMITER)
                lines.setdefault(resource_type.decode(), []).append(line)
    return [
        (resource_type, len(lines[resource_type]), b"".join(lines[resource_type])) for resource_type in sorted(lines)
    ]


# `COPY … CSV` with a delimiter and a quote that JSON text never holds raw (jsonb::text escapes every control
# character): each line is `Type<0x02>body<newline>`, the body exactly as `body::text` gives it. (The text
# format would double every backslash of the JSON.)
COPY_DELIMITER = b"\x02"
# As RANGE_BODIES_SQL, over a range of row ids (the primary key), every type.
ROW_RANGE_BODIES_COPY = f"""
COPY (
    SELECT r.resource_type, {BODY_AT_UNTIL}
    FROM {ROWS_AT_UNTIL}
    WHERE r.id > %(after)s AND r.id <= %(last)s AND r.resource_type = ANY(%(types)s)
      AND CASE WHEN r.last_updated <= %(until)s THEN NOT r.deleted ELSE NOT old.deleted END
) TO STDOUT WITH (FORMAT csv, DELIMITER E'\\x02', QUOTE E'\\x01')
"""


def share_of_rows(resource_types: Sequence[str]) -> float:
    """About which share of the table's rows (current or deleted) are of these types, from 0 to 1.

    The types are counted (an index-only scan of the type index); the whole table is PostgreSQL's estimate
    (`reltuples`), counted only when the table was never analyzed.
    """
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM fhirstore_resource WHERE resource_type = ANY(%s)", [list(resource_types)])
        (of_types,) = cursor.fetchone()
        cursor.execute("SELECT reltuples FROM pg_class WHERE oid = 'fhirstore_resource'::regclass")
        (estimate,) = cursor.fetchone()
        if estimate is None or estimate < of_types:
            cursor.execute("SELECT count(*) FROM fhirstore_resource")
            (estimate,) = cursor.fetchone()
    return of_types / estimate if estimate else 1.0


def compartment_ids_page(
    resource_type: str,
    patient_ids: Sequence[str],
    *,
    after: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    filters: Sequence[Q] = (),
    limit: int = ID_PAGE_SIZE,
) -> list[str]:
    """The next ids of a type in the Patient compartments of `patient_ids`, in id order, after `after`.

    A resource is in a patient's compartment when one of its compartment references (see
    `search_params.patient_compartment_params`) points at that Patient; the Patients themselves are in
    their own compartments. Types outside the Patient compartment have no ids here.
    """
    in_compartments = compartment_condition(resource_type, patient_ids)
    if in_compartments is None:
        return []
    resources = current_resources(resource_type, since=since, until=until, filters=filters).filter(in_compartments)
    return _page(resources, after, limit)


def compartment_condition(resource_type: str, patient_ids: Sequence[str]) -> Q | None:
    """The filter on `Resource` rows of a type that are in the Patient compartments of `patient_ids` (see
    `compartment_ids_page`); None for a type that is never in a Patient compartment."""
    if resource_type == "Patient":
        links = ReferenceIndex.objects.filter(
            resource_type="Patient", param="link", target_type="Patient", target_id__in=list(patient_ids)
        ).values("resource_id")
        return Q(logical_id__in=list(patient_ids)) | Q(pk__in=links)
    params = patient_compartment_params(resource_type)
    if not params:
        return None
    links = ReferenceIndex.objects.filter(
        target_id__in=list(patient_ids), target_type="Patient", resource_type=resource_type, param__in=params
    ).values("resource_id")
    return Q(pk__in=links)


def current_bodies(resource_type: str, ids: Sequence[str]) -> list[dict]:
    """The current bodies of these ids, in id order; deleted and unknown ids are left out."""
    return list(
        Resource.objects.filter(resource_type=resource_type, logical_id__in=list(ids), deleted=False)
        .order_by("logical_id")
        .values_list("body", flat=True)
    )


def current_bodies_json(resource_type: str, ids: Sequence[str], *, until: datetime | None = None) -> list[str]:
    """As `current_bodies`, but each body as one line of JSON text, ready for NDJSON (no parsing in Python).

    With `until`, the bodies as they were then (see the module docstring).
    """
    return [body for _, body in bodies_json_by_id(resource_type, ids, until=until)]


def bodies_json_by_id(
    resource_type: str, ids: Sequence[str], *, until: datetime | None = None
) -> list[tuple[str, str]]:
    """(logical id, body as JSON text) of these ids, in id order, current (at `until`, if given).

    The ids travel as one newline-joined text (an id never holds a newline): a list of thousands of strings
    costs the driver more to send than the database takes to read them.
    """
    if until is None:
        sql = (
            "SELECT logical_id, body::text FROM fhirstore_resource WHERE resource_type = %(type)s"
            " AND logical_id = ANY(string_to_array(%(ids)s, E'\\n')) AND NOT deleted ORDER BY logical_id"
        )
    else:
        sql = (
            "SELECT logical_id, body FROM (SELECT r.logical_id, CASE WHEN r.last_updated <= %(until)s THEN"
            " r.body::text ELSE (SELECT v.body::text FROM fhirstore_resourceversion v WHERE v.resource_id = r.id"
            " AND v.last_updated <= %(until)s ORDER BY v.version_id DESC LIMIT 1) END AS body"
            " FROM fhirstore_resource r WHERE r.resource_type = %(type)s"
            " AND r.logical_id = ANY(string_to_array(%(ids)s, E'\\n'))) as_of WHERE body IS NOT NULL ORDER BY logical_id"
        )
    with connection.cursor() as cursor:
        cursor.execute(sql, {"type": resource_type, "ids": "\n".join(ids), "until": until})
        return cursor.fetchall()


class Member(NamedTuple):
    """A resource in a patient's compartment: the patient, the resource's logical id and its row id."""

    patient_id: str
    logical_id: str
    row_id: int


def bodies_json_by_row_id(row_ids: Iterable[int], *, until: datetime | None = None) -> dict[int, str]:
    """Row id -> body as JSON text of the rows that are current (at `until`, if given), in no order.

    By the primary key, where `bodies_json_by_id` looks each logical id up in the (type, logical id) index: for
    6,500 Observations 150-180 ms against 300-330 ms (loaded 2-core machine). The ids travel as one text."""
    if until is None:
        sql = (
            "SELECT id, body::text FROM fhirstore_resource"
            " WHERE id = ANY(string_to_array(%(ids)s, ',')::bigint[]) AND NOT deleted"
        )
    else:
        sql = (
            "SELECT id, body FROM (SELECT r.id, CASE WHEN r.last_updated <= %(until)s THEN r.body::text ELSE"
            " (SELECT v.body::text FROM fhirstore_resourceversion v WHERE v.resource_id = r.id"
            " AND v.last_updated <= %(until)s ORDER BY v.version_id DESC LIMIT 1) END AS body"
            " FROM fhirstore_resource r WHERE r.id = ANY(string_to_array(%(ids)s, ',')::bigint[])) as_of"
            " WHERE body IS NOT NULL"
        )
    with connection.cursor() as cursor:
        cursor.execute(sql, {"ids": ",".join(str(row_id) for row_id in row_ids), "until": until})
        return dict(cursor.fetchall())


def compartment_members(
    patient_ids: Sequence[str],
    filters_by_type: Mapping[str, Sequence[Q]],
    *,
    since: datetime | None = None,
    until: datetime | None = None,
) -> dict[str, list[Member]]:
    """Per type of `filters_by_type` (Patient aside), a `Member` for every resource of the type in the compartment
    of each of `patient_ids` that is current (at `until`), changed at or after `since` and matches any of the
    type's filters (none: every one), by patient and id, types in name order; a resource in several of these
    compartments comes once for each. Types without any are left out.

    The compartment is that of `compartment_ids_page`. One query finds the compartments' reference rows of every
    type at once (most types have none for a page of patients), then one per type present checks the resources.
    With `until`, those deleted since that were in the compartments then are added (one more query,
    `compartment_members_deleted_after`), for the types without filters: a deleted resource has no index rows
    left to match a filter against.
    """
    in_compartments = Q(resource_type__in=[])
    for resource_type in filters_by_type:
        if resource_type != "Patient" and (params := patient_compartment_params(resource_type)):
            in_compartments |= Q(resource_type=resource_type, param__in=params)
    links: dict[str, set[tuple[str, int]]] = {}
    for resource_type, patient_id, row_id in ReferenceIndex.objects.filter(
        in_compartments, target_id__in=list(patient_ids), target_type="Patient"
    ).values_list("resource_type", "target_id", "resource_id"):
        links.setdefault(resource_type, set()).add((patient_id, row_id))
    members = {}
    for resource_type, pairs in sorted(links.items()):
        kept = dict(
            current_resources(resource_type, since=since, until=until, filters=filters_by_type[resource_type])
            .filter(
                pk__in=RawSQL(
                    "SELECT unnest(string_to_array(%s, ',')::bigint[])",
                    [",".join(str(row_id) for row_id in sorted({row for _, row in pairs}))],
                )
            )
            .values_list("pk", "logical_id")
        )  # the row ids as one text: a parameter each costs more
        if chosen := sorted(Member(patient_id, kept[row_id], row_id) for patient_id, row_id in pairs if row_id in kept):
            members[resource_type] = chosen
    if until is not None:
        unfiltered = [t for t, filters in filters_by_type.items() if t != "Patient" and not filters]
        deleted = compartment_members_deleted_after(unfiltered, patient_ids, since=since, until=until)
        for resource_type, type_members in deleted.items():  # none of them has index rows: no member twice
            members[resource_type] = sorted([*members.get(resource_type, []), *type_members])
        members = {resource_type: members[resource_type] for resource_type in sorted(members)}
    return members


def iter_deleted_id_pages(
    resource_type: str, *, since: datetime, until: datetime, page_size: int = ID_PAGE_SIZE
) -> Iterator[list[str]]:
    """The ids of a type deleted at or after `since` and still deleted at `until`, page by page, in id order."""
    rows = Resource.objects.filter(resource_type=resource_type)
    then = _as_of(until)
    deleted_then = Q(last_updated__lte=until, deleted=True, last_updated__gte=since) | Q(
        last_updated__gt=until, then_deleted=True, then_updated__gte=since
    )
    rows = rows.alias(
        then_deleted=Subquery(then.values("deleted")[:1]), then_updated=Subquery(then.values("last_updated")[:1])
    ).filter(deleted_then)
    return _pages(lambda after: _page(rows, after, page_size))


def deleted_in_compartments(
    resource_type: str, ids: Sequence[str], patient_ids: Sequence[str] | None, *, until: datetime
) -> list[str]:
    """Those of `ids` (resources deleted as of `until`) that were in the Patient compartment of one of
    `patient_ids` (of any Patient when None) when they were deleted, in id order.

    A deletion removes a resource's index rows, so its compartments are judged by its last version before the
    deletion (the latest undeleted one up to `until`): see `_compartments_of`.
    """
    params = set(patient_compartment_params(resource_type))
    if not params and resource_type != "Patient":
        return []
    extract = current_registry().extract
    wanted = None if patient_ids is None else set(patient_ids)
    kept = []
    with connection.cursor() as cursor:
        cursor.execute(LAST_LIVE_BODIES_SQL, {"type": resource_type, "ids": list(ids), "until": until})
        for logical_id, body in cursor.fetchall():
            targets = _compartments_of(resource_type, logical_id, body, params, extract)
            if targets and (wanted is None or targets & wanted):
                kept.append(logical_id)
    return kept


LAST_LIVE_BODIES_SQL = """
SELECT DISTINCT ON (r.logical_id) r.logical_id, v.body::text
FROM fhirstore_resource r JOIN fhirstore_resourceversion v ON v.resource_id = r.id
WHERE r.resource_type = %(type)s AND r.logical_id = ANY(%(ids)s)
  AND NOT v.deleted AND v.body IS NOT NULL AND v.last_updated <= %(until)s
ORDER BY r.logical_id, v.version_id DESC
"""


def compartment_members_deleted_after(
    resource_types: Iterable[str], patient_ids: Sequence[str] | None, *, since: datetime | None, until: datetime
) -> dict[str, list[Member]]:
    """Per type of `resource_types`, a `Member` for every resource that was current at `until` (changed at or after
    `since`) and has been deleted since, for each of `patient_ids` (every Patient when None) whose compartment it
    was in at `until`, by patient and id; types without any are left out.

    The compartments of a store read as of `until` are otherwise judged by the current index rows, and a deletion
    removes a resource's rows: such a resource is judged by its version of `until` instead (`_compartments_of`).
    One query for all the types, a range scan of the partial index of deleted rows (`fhir_resource_deleted_updated`)
    from `until` on, that reads their version of then from the history; the bodies are parsed here. Its cost grows
    with the deletions since `until`, not with the other rows changed since.
    """
    params = {t: set(patient_compartment_params(t)) for t in resource_types}
    params = {t: p for t, p in params.items() if p or t == "Patient"}
    if not params:
        return {}
    extract = current_registry().extract
    wanted = None if patient_ids is None else set(patient_ids)
    members: dict[str, list[Member]] = {}
    with connection.cursor() as cursor:
        cursor.execute(DELETED_AFTER_BODIES_SQL, {"types": sorted(params), "since": since, "until": until})
        for resource_type, row_id, logical_id, body in cursor.fetchall():
            targets = _compartments_of(resource_type, logical_id, body, params[resource_type], extract)
            for patient_id in targets if wanted is None else targets & wanted:
                members.setdefault(resource_type, []).append(Member(patient_id, logical_id, row_id))
    return {resource_type: sorted(members[resource_type]) for resource_type in sorted(members)}


# Deleted now, changed after `until` (the partial (resource_type, last_updated) WHERE deleted index), and current
# at `until` in the latest version up to then, changed at or after `since`.
DELETED_AFTER_BODIES_SQL = """
SELECT r.resource_type, r.id, r.logical_id, old.body::text
FROM fhirstore_resource r
CROSS JOIN LATERAL (
    SELECT v.body, v.deleted, v.last_updated FROM fhirstore_resourceversion v
    WHERE v.resource_id = r.id AND v.last_updated <= %(until)s
    ORDER BY v.version_id DESC LIMIT 1
) old
WHERE r.resource_type = ANY(%(types)s) AND r.last_updated > %(until)s AND r.deleted
  AND NOT old.deleted AND old.last_updated >= coalesce(%(since)s, '-infinity'::timestamptz)
"""


def _compartments_of(
    resource_type: str, logical_id: str, body: str, params: set[str], extract: Callable[[dict], IndexRows]
) -> set[str]:
    """The ids of the Patients in whose compartments a body (JSON text) of a resource puts it: by the references
    the index would hold for that body now, with the same parameters (`compartment` ones, custom SearchParameters
    included) as a write. A Patient is in its own compartment, and in those of the Patients its `link` names."""
    targets = {
        target_id
        for param, target_type, target_id in extract(json.loads(body)).references
        if target_type == "Patient" and (param in params or (resource_type == "Patient" and param == "link"))
    }
    if resource_type == "Patient":
        targets.add(logical_id)
    return targets


def missing_ids(resource_type: str, ids: Sequence[str]) -> list[str]:
    """Those of `ids` that are not current resources of the type (unknown or deleted), sorted."""
    present = set(
        Resource.objects.filter(resource_type=resource_type, logical_id__in=list(ids), deleted=False).values_list(
            "logical_id", flat=True
        )
    )
    return sorted(set(ids) - present)


def group_patient_ids(group_id: str) -> list[str]:
    """The ids of the Patients a Group lists in `member.entity`, sorted; 404/410 for an unknown/deleted Group."""
    row = Resource.objects.filter(resource_type="Group", logical_id=group_id).values_list("deleted", "body").first()
    if row is None:
        raise ResourceNotFound(f"Group/{group_id} is not known")
    if row[0]:
        raise ResourceGone(f"Group/{group_id} was deleted")
    return _member_patients(row[1])


def group_patient_ids_at(group_id: str, until: datetime) -> list[str]:
    """The ids of the Patients a Group listed in `member.entity` at `until`, sorted: its version of then (one
    read, from the history when it changed or was deleted since, as `bodies_json_by_id` reads any resource);
    none when it did not exist then. A reader of the store as of `until` takes the members of then: one added
    since is not among them, one removed or a Group deleted since still is."""
    bodies = bodies_json_by_id("Group", [group_id], until=until)
    return _member_patients(json.loads(bodies[0][1])) if bodies else []


def _member_patients(group: dict) -> list[str]:
    patients = set()
    for member in group.get("member", []):
        target = parse_relative_reference(((member or {}).get("entity") or {}).get("reference", ""))
        if target and target[0] == "Patient":
            patients.add(target[1])
    return sorted(patients)


def current_resources(
    resource_type: str, *, since: datetime | None = None, until: datetime | None = None, filters: Sequence[Q] = ()
) -> QuerySet[Resource]:
    """The resources of a type that are current (at `until`, if given), changed at or after `since`, matching any
    of `filters`."""
    resources = Resource.objects.filter(resource_type=resource_type)
    if until is None:
        resources = resources.filter(deleted=False)
        if since is not None:
            resources = resources.filter(last_updated__gte=since)
    else:
        # Changed after `until`: as its latest version up to then (a subquery only for those few rows).
        then = _as_of(until)
        live_then = Q(last_updated__lte=until, deleted=False) | Q(last_updated__gt=until, then_deleted=False)
        if since is not None:
            live_then = (Q(last_updated__lte=until, deleted=False) & Q(last_updated__gte=since)) | Q(
                last_updated__gt=until, then_deleted=False, then_updated__gte=since
            )
        resources = resources.alias(
            then_deleted=Subquery(then.values("deleted")[:1]), then_updated=Subquery(then.values("last_updated")[:1])
        ).filter(live_then)
    if filters:
        matches_any = Q()
        for condition in filters:
            matches_any |= condition
        resources = resources.filter(matches_any)
    return resources


def _as_of(until: datetime) -> QuerySet[ResourceVersion]:
    """The history of the outer resource up to `until`, latest first."""
    return ResourceVersion.objects.filter(resource=OuterRef("pk"), last_updated__lte=until).order_by("-version_id")


def _page(resources: QuerySet[Resource], after: str | None, limit: int) -> list[str]:
    if after is not None:
        resources = resources.filter(logical_id__gt=after)
    return list(resources.order_by("logical_id").values_list("logical_id", flat=True)[:limit])


def _pages(next_page: Callable[[str | None], list[str]]) -> Iterator[list[str]]:
    after = None
    while page := next_page(after):
        yield page
        after = page[-1]
