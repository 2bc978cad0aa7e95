"""Deleting resources for good: the current row, every superseded version and every index row, with the
referential integrity check that must come first (the store side of `$delete-expunge`).

Everything is keyed by the row keys (`fhirstore_resource.id`) of one page (one array parameter,
`= ANY(%s::bigint[])`, never a literal IN list of thousands; see `key_array`), so each statement is an index scan: `fhirstore_resource` by its primary
key, `fhirstore_resourceversion` by its (resource_id, version_id) key, the index tables by their `resource_id`
index, the referrers by the reference index's leading (target_id, target_type).
`tests/fhirjobs/deleteexpunge/test_job.py` checks the plans. The caller owns the transaction: a page is
one short one.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from django.db import connection
from django.db.models import Q

from fhirstore.exceptions import ResourceReferenced
from fhirstore.models import ReferenceIndex, Resource, ResourceVersion, SearchCache
from fhirstore.search import matching_resources, type_filter
from fhirstore.storage import INDEX_TABLES

REFERRERS_NAMED = 20  # referrers an OperationOutcome names; the rest are counted


@dataclass(frozen=True)
class Referral:
    """`referrer` (Type/id) refers to `target` (Type/id) by the search parameter `param`."""

    referrer: str
    param: str
    target: str

    def __str__(self) -> str:
        return f"{self.referrer} refers to {self.target} ({self.param})"


def _matched_by(urls: Sequence[str]) -> Q:
    """Resources (by pk) that one of the urls matches now."""
    spared = Q(pk__in=[])
    for url in urls:
        resource_type, conditions = type_filter(url)
        spared |= Q(pk__in=matching_resources(resource_type, conditions).values("id"))
    return spared


def referrals_into(keys: Sequence[int], *, excluding_urls: Sequence[str] = ()) -> list[Referral]:
    """The references from current resources to the resources with these row keys, except from those
    themselves and from resources any of `excluding_urls` matches (they go too). Sorted."""
    if not keys:
        return []
    with connection.cursor() as cursor:
        # One index probe of the reference index's (target_id, target_type) per resource (the OFFSET 0 keeps
        # the lateral apart): the planner, seeing few references into the type, would otherwise read the whole
        # reference index once per page, a cost that grows with the store rather than with the page.
        cursor.execute(
            "SELECT DISTINCT r.id, r.resource_type, r.logical_id, ri.param, t.resource_type, t.logical_id"
            " FROM fhirstore_resource t CROSS JOIN LATERAL"
            " (SELECT resource_id, param FROM fhirstore_referenceindex"
            "  WHERE target_id = t.logical_id AND target_type = t.resource_type OFFSET 0) ri"
            " JOIN fhirstore_resource r ON r.id = ri.resource_id"
            " WHERE t.id = ANY(%(keys)s::bigint[]) AND r.id <> ALL(%(keys)s::bigint[])",
            {"keys": key_array(keys)},
        )
        rows = cursor.fetchall()
    if rows and excluding_urls:
        spared = set(matching_resources_of_pks([row[0] for row in rows], excluding_urls))
        rows = [row for row in rows if row[0] not in spared]
    return sorted(Referral(f"{t}/{i}", param, f"{tt}/{ti}") for _, t, i, param, tt, ti in rows)


def matching_resources_of_pks(pks: Sequence[int], urls: Sequence[str]) -> list[int]:
    """Those of these resource pks that one of the urls matches."""
    return list(
        Resource.objects.filter(pk__in=list(pks), deleted=False).filter(_matched_by(urls)).values_list("pk", flat=True)
    )


def refuse_if_referenced(referrals: Sequence[Referral], *, total: int | None = None) -> None:
    """ResourceReferenced naming the referrers (HAPI: 409, "Unable to delete … because … refers to it")."""
    if not referrals:
        return
    named = [str(referral) for referral in referrals[:REFERRERS_NAMED]]
    more = (total or len(referrals)) - len(named)
    raise ResourceReferenced(
        "Unable to delete: other resources refer to them (delete those too, or ask for cascade): "
        + "; ".join(named)
        + (f"; and {more} more" if more > 0 else ""),
        referrers=sorted({referral.referrer for referral in referrals}),
    )


def referrals_into_matches(urls: Sequence[str], *, limit: int = REFERRERS_NAMED) -> list[Referral]:
    """The references into what the urls match from resources none of them matches: what a delete-expunge
    of the urls would leave dangling. One set-based query per url (a semi-join on the reference index)."""
    found: list[Referral] = []
    spared = Resource.objects.filter(_matched_by(urls)).values("id")
    for url in urls:
        resource_type, conditions = type_filter(url)
        targets = matching_resources(resource_type, conditions).values("logical_id")
        rows = (
            ReferenceIndex.objects.filter(target_type=resource_type, target_id__in=targets)
            .exclude(resource__in=spared)
            .filter(resource__deleted=False)
            .values_list("resource_type", "resource__logical_id", "param", "target_id")
            .order_by("resource_type", "resource__logical_id", "param", "target_id")[: limit - len(found)]
        )
        found += [Referral(f"{t}/{i}", param, f"{resource_type}/{target}") for t, i, param, target in rows]
        if len(found) >= limit:
            break
    return found


def expunge_resources(keys: Sequence[int], *, cascade_rounds: int = 0) -> Counter[str]:
    """Delete the resources with these row keys for good (deleted ones too): current rows, versions, index rows.
    Returns the count per type of the resources removed. In the caller's transaction.

    With `cascade_rounds` > 0, the resources that refer to them are removed too, and those that refer to
    those, up to that many rounds; ResourceReferenced if referrers remain after the last round. Without,
    the caller has checked the referrers first (`referrals_into`). Rows are locked in key order, as writes lock
    them; keys are never reused, so a resource created again under a logical id since is another one, and stays.
    """
    assert connection.in_atomic_block, "expunge_resources runs in the caller's transaction"
    removed: Counter[str] = Counter()
    with connection.cursor() as cursor:
        doomed = _locked(cursor, keys)
        frontier = list(doomed)
        for round_number in range(cascade_rounds + 1 if cascade_rounds else 0):
            referrers = _referrer_pks(cursor, frontier, exclude=doomed)
            if not referrers:
                break
            if round_number == cascade_rounds:
                _refuse_remaining(cursor, referrers, cascade_rounds)
            found = _locked(cursor, referrers)
            doomed.update(found)
            frontier = list(found)
        if not doomed:
            return removed
        cursor.execute(_DELETE_EVERY_ROW, {"pks": key_array(sorted(doomed))})
        removed.update(dict(cursor.fetchall()))
    return removed


def key_array(keys: Iterable[int]) -> str:
    """Row keys as one PostgreSQL array literal, for a parameter cast `::bigint[]`: psycopg adapts a Python list
    element by element, in Python, and once for every placeholder naming it (~5 ms per 1,000 keys on a busy
    2-core machine, 42 ms for the eight of the page's DELETE), where this is one string."""
    return "{" + ",".join(str(int(key)) for key in keys) + "}"


def _locked(cursor, keys) -> dict[int, str]:
    """Lock the rows with these keys (those still there), in key order; their types by key."""
    cursor.execute(
        "SELECT id, resource_type FROM fhirstore_resource WHERE id = ANY(%s::bigint[]) ORDER BY id FOR UPDATE",
        [key_array(sorted(keys))],
    )
    return dict(cursor.fetchall())


def _delete_every_row() -> str:
    """One statement deleting the index rows, the versions and the rows of the resources `%(pks)s`, answering
    (resource_type, count) per type: one round trip a page instead of eight, each part still an index scan by the
    array (the foreign keys are deferred, so the order within the statement does not matter). It runs after the
    rows are locked, so its snapshot sees every index row written before the lock."""
    parts = [
        f"d{n} AS (DELETE FROM {table} WHERE resource_id = ANY(%(pks)s::bigint[]))"
        for n, table in enumerate([model._meta.db_table for model in INDEX_TABLES] + [ResourceVersion._meta.db_table])
    ]
    return (
        "WITH " + ", ".join(parts) + ", rows AS (DELETE FROM fhirstore_resource WHERE id = ANY(%(pks)s::bigint[])"
        " RETURNING resource_type) SELECT resource_type, count(*) FROM rows GROUP BY resource_type"
    )


_DELETE_EVERY_ROW = _delete_every_row()


def _referrer_pks(cursor, targets: Sequence[int], *, exclude: dict[int, str]) -> set[int]:
    """The pks of current resources referring to these (by pk), not among `exclude`."""
    if not targets:
        return set()
    cursor.execute(
        "SELECT DISTINCT ri.resource_id FROM fhirstore_resource t"
        " JOIN fhirstore_referenceindex ri ON ri.target_id = t.logical_id AND ri.target_type = t.resource_type"
        " WHERE t.id = ANY(%s::bigint[])",
        [key_array(targets)],
    )
    return {pk for (pk,) in cursor.fetchall() if pk not in exclude}


def _refuse_remaining(cursor, referrers: set[int], rounds: int) -> None:
    cursor.execute(
        "SELECT resource_type || '/' || logical_id FROM fhirstore_resource WHERE id = ANY(%s::bigint[])"
        " ORDER BY 1 LIMIT %s",
        [key_array(referrers), REFERRERS_NAMED],
    )
    named = [name for (name,) in cursor.fetchall()]
    raise ResourceReferenced(
        f"Resources still refer to them after {rounds} cascade rounds (cascadeMaxRounds):"
        f" {', '.join(named)}" + (f" and {len(referrers) - len(named)} more" if len(referrers) > len(named) else ""),
        referrers=named,
    )


def forget_searches(resource_types: Sequence[str]) -> int:
    """Drop the cached searches over these types (their pages name resources that are gone); how many."""
    deleted, _ = SearchCache.objects.filter(resource_type__in=list(resource_types)).delete()
    return deleted


def expunge_previous_versions(resource_type: str, logical_ids: Sequence[str]) -> int:
    """Delete the superseded versions of these resources (the current ones stay); how many went. One statement:
    the rows by (resource_type, logical_id), their versions by the (resource_id, version_id) key."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"DELETE FROM {ResourceVersion._meta.db_table} v USING fhirstore_resource r"
            " WHERE r.resource_type = %s AND r.logical_id = ANY(%s) AND v.resource_id = r.id",
            [resource_type, list(logical_ids)],
        )
        return cursor.rowcount


_VERSIONS = ResourceVersion._meta.db_table
_DELETE_PREVIOUS_VERSIONS = f"DELETE FROM {_VERSIONS} WHERE resource_id = ANY(%s::bigint[])"
_DELETE_OLDEST_PREVIOUS_VERSIONS = (
    f"DELETE FROM {_VERSIONS} WHERE (resource_id, version_id) IN (SELECT resource_id, version_id FROM {_VERSIONS}"
    " WHERE resource_id = ANY(%s::bigint[]) ORDER BY resource_id, version_id LIMIT %s)"
)


class ExpungeKinds(NamedTuple):
    """What an `$expunge` removes (HAPI's parameters): `deleted` = expungeDeletedResources (a deleted resource
    with its every version), `previous` = expungePreviousVersions (superseded versions), `everything` =
    expungeEverything (every resource, whole)."""

    deleted: bool = False
    previous: bool = False
    everything: bool = False


def expunge_rows(keys: Sequence[int], kinds: ExpungeKinds, *, limit: int | None = None) -> int:
    """Expunge what `kinds` names among the resources with these row keys; how many versions went, current ones
    (a resource's row) included, as HAPI counts. At most `limit`: resources go in key order and whole, so the
    one that would pass it stays, and previous versions go oldest first. In the caller's transaction.

    The rows are locked in key order first, and a deleted resource is chosen under that lock: one written again
    since the page was listed is current, and keeps its row (only its previous versions may go)."""
    assert connection.in_atomic_block, "expunge_rows runs in the caller's transaction"
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT r.id, r.deleted, (SELECT count(*) FROM {_VERSIONS} v"
            "  WHERE v.resource_id = r.id) FROM fhirstore_resource r"
            " WHERE r.id = ANY(%s::bigint[]) ORDER BY r.id FOR UPDATE OF r",
            [key_array(sorted(keys))],
        )
        rows = cursor.fetchall()
        budget = limit if limit is not None else math.inf
        removed, whole = 0, set()
        for pk, deleted, versions in rows:
            if (kinds.everything or (kinds.deleted and deleted)) and removed + 1 + versions <= budget:
                whole.add(pk)
                removed += 1 + versions
        if whole:
            cursor.execute(_DELETE_EVERY_ROW, {"pks": key_array(sorted(whole))})
        kept = key_array(pk for pk, _, _ in rows if pk not in whole)
        if kinds.previous and kept != "{}" and removed < budget:
            if limit is None:
                cursor.execute(_DELETE_PREVIOUS_VERSIONS, [kept])
            else:
                cursor.execute(_DELETE_OLDEST_PREVIOUS_VERSIONS, [kept, limit - removed])
            removed += cursor.rowcount
    return removed
