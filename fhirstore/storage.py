"""Writing and reading resources, with versions, `meta` and the search index kept in step.

`save_resources` is the one write path: a single REST create, a transaction bundle and a bulk load of
thousands of NDJSON lines all go through it. It takes a batch, locks the existing rows in id order,
moves their current versions into the history, and COPYs the new rows and all their index rows, so a
batch costs a handful of statements whatever its size.
"""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

import orjson
from django.db import IntegrityError, connection, transaction

from fhirstore.authority import WriteAuthority
from fhirstore.custom_params import Registry, index_extractor, index_registry, sync_search_parameters
from fhirstore.exceptions import (
    InvalidRequest,
    PreconditionFailed,
    ResourceGone,
    ResourceNotFound,
    UnknownResourceType,
    VersionConflict,
)
from fhirstore.fhirdates import format_instant
from fhirstore.index_sql import TABLE_OF_KIND, insert_index_rows
from fhirstore.models import (
    DateIndex,
    NumberIndex,
    QuantityIndex,
    ReferenceIndex,
    Resource,
    ResourceVersion,
    StringIndex,
    TokenIndex,
)
from fhirstore.resource_types import is_resource_type
from fhirstore.search_params import IndexRows, params_for

# Each kind of IndexRows: its table and the columns its tuples fill, after resource_id and resource_type.
INDEX_COLUMNS = {
    "tokens": (TokenIndex, ("param", "system", "code")),
    "strings": (StringIndex, ("param", "normalized", "exact")),
    "dates": (DateIndex, ("param", "low", "high")),
    "references": (ReferenceIndex, ("param", "target_type", "target_id")),
    "numbers": (NumberIndex, ("param", "value")),
    "quantities": (QuantityIndex, ("param", "system", "code", "value")),
}
INDEX_TABLES = tuple(model for model, _ in INDEX_COLUMNS.values())


@dataclass(frozen=True)
class StoredVersion:
    """One version of a resource as stored; `body` is None for a deletion."""

    resource_type: str
    logical_id: str
    version_id: int
    last_updated: datetime
    deleted: bool
    body: dict | None
    created: bool = False  # this write created the resource (or brought a deleted one back)

    @property
    def etag(self) -> str:
        return f'W/"{self.version_id}"'

    @property
    def versioned_reference(self) -> str:
        return f"{self.resource_type}/{self.logical_id}/_history/{self.version_id}"


@dataclass(frozen=True)
class Write:
    """A resource to create or replace (it carries its `resourceType` and `id`)."""

    resource: dict
    if_match: int | None = None  # the version the client expects to replace (If-Match), if any


def version_from_etag(value: object) -> int | None:
    """The version of an ETag / If-Match value (`W/"3"`, `"3"` or `3`); None when empty."""
    if value in (None, ""):
        return None
    text = str(value).strip()
    text = (text.removeprefix("W/")).strip('"')
    if not text.isdigit():
        raise InvalidRequest(f'{value!r} is not a version (W/"<version>")')
    return int(text)


def new_logical_id() -> str:
    """A server-assigned id."""
    return str(uuid.uuid4())


def save_resources(
    writes: Sequence[Write], *, authority: WriteAuthority, now: datetime | None = None
) -> list[StoredVersion]:
    """Create or update a batch of checked resources, in the caller's transaction.

    Each resource gets its next version id and `meta.versionId` / `meta.lastUpdated` (its body is
    updated in place); its search index rows are replaced. A resource may appear only once per batch.
    Raises PreconditionFailed when an If-Match version is not the current one, and VersionConflict
    when a concurrent transaction created the same resource first. SearchParameter resources change what
    is indexed (`custom_params`): Forbidden unless `authority` may write them (the one check, for every path).
    """
    if not writes:
        return []
    _require_transaction()
    keys = _unique_keys(writes)
    authority.check(resource_type for resource_type, _ in keys)
    changes_parameters = any(resource_type == "SearchParameter" for resource_type, _ in keys)
    extract = index_extractor(exclusive=changes_parameters)
    with connection.cursor() as cursor:
        existing = _lock_current_rows(cursor, keys)
        results, pks = _write_locked(cursor, writes, keys, existing, extract, now)
    if changes_parameters:
        _sync_search_parameters(results, pks)
    return results


def _unique_keys(writes: Sequence[Write]) -> list[tuple[str, str]]:
    keys = [(w.resource["resourceType"], w.resource["id"]) for w in writes]
    if len(set(keys)) != len(keys):
        raise InvalidRequest("A resource may be written only once per batch")
    return keys


def _write_locked(
    cursor,
    writes: Sequence[Write],
    keys: Sequence[tuple[str, str]],
    existing: dict[tuple[str, str], tuple[int, int, bool]],
    extract: Callable[[dict], IndexRows],
    now: datetime | None,
    registry: Registry | None = None,
) -> tuple[list[StoredVersion], list[int]]:
    """The writing half of `save_resources`, once the parameters lock is taken and the rows are locked.
    Returns the versions and their rows' ids. With a `registry`, `extract` gives the custom parameters' rows
    only, and the built-in ones are extracted in SQL from the rows written (`index_sql`)."""
    if not writes:
        return [], []
    now = now or _transaction_start(cursor)
    for write, key in zip(writes, keys):
        _check_if_match(key, write.if_match, existing.get(key))
    replaced = [existing[key][0] for key in keys if key in existing]
    _move_to_history(cursor, replaced)
    new_pks = iter(_allocate_pks(cursor, len(keys) - len(replaced)))
    last_updated = format_instant(now)
    results, new_rows, updated_rows, index_items = [], [], [], []
    for write, key in zip(writes, keys):
        current = existing.get(key)
        version_id = current[1] + 1 if current else 1
        pk = current[0] if current else next(new_pks)
        body = write.resource
        body["meta"] = {**(body.get("meta") or {}), "versionId": str(version_id), "lastUpdated": last_updated}
        text = _json_text(body)
        if current:
            updated_rows.append((pk, version_id, text))
        else:
            new_rows.append((pk, key[0], key[1], version_id, now, False, text))
        index_items.append((pk, key[0], extract(body)))
        created = current is None or current[2]
        results.append(StoredVersion(key[0], key[1], version_id, now, False, body, created))
    with _concurrent_creation_is_a_conflict():
        _copy(
            cursor,
            Resource,
            ("id", "resource_type", "logical_id", "version_id", "last_updated", "deleted", "body"),
            new_rows,
        )
        if updated_rows:
            cursor.execute(
                "UPDATE fhirstore_resource r SET version_id = u.version_id, last_updated = %s, deleted = false,"
                " body = u.body::jsonb FROM unnest(%s::bigint[], %s::int[], %s::text[])"
                " AS u(id, version_id, body) WHERE r.id = u.id",
                [now, *map(list, zip(*updated_rows))],
            )
        _write_index_rows(cursor, index_items)
        if registry is not None:
            _insert_built_in_index_rows(cursor, [pk for pk, _, _ in index_items], registry)
    return results, [pk for pk, _, _ in index_items]


def _insert_built_in_index_rows(cursor, pks: Sequence[int], registry: Registry) -> None:
    """The built-in parameters' index rows of these resources, extracted in SQL from their stored bodies."""
    cursor.execute("SELECT DISTINCT resource_type FROM fhirstore_resource WHERE id = ANY(%s)", [list(pks)])
    types = [resource_type for (resource_type,) in cursor.fetchall()]
    skip = [(resource_type, name) for resource_type in types for name in registry.replacing(resource_type)]
    insert_index_rows(
        cursor,
        source="(SELECT id, resource_type, body FROM fhirstore_resource WHERE id = ANY(%(ids)s))",
        source_params={"ids": list(pks)},
        targets=TABLE_OF_KIND,
        skip=skip,
        resource_types=types,
    )


def _sync_search_parameters(results: Sequence[StoredVersion], pks: Sequence[int]) -> None:
    sync_search_parameters(
        [(pk, version.body) for pk, version in zip(pks, results) if version.resource_type == "SearchParameter"]
    )


def _json_text(body: dict) -> str:
    """Compact JSON of a body: orjson (~5x faster than `json`, a tenth of a bulk load's time saved); `json` for
    what orjson refuses but `json.loads` may have produced (integers beyond 64 bits), so nothing new fails."""
    try:
        return orjson.dumps(body).decode()
    except orjson.JSONEncodeError:
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


def save_changed_resources(
    writes: Sequence[Write], *, authority: WriteAuthority, now: datetime | None = None, index_in_database: bool = False
) -> tuple[list[StoredVersion], set[tuple[str, str]]]:
    """`save_resources` for imports: a resource whose content equals its current version is left alone.

    "Equal" ignores `meta.versionId` and `meta.lastUpdated` (the source's, or ours), so loading the same
    data again makes no new version. Returns the versions written and the `(type, id)`s left unchanged.
    The comparison is one statement over the batch, and only for resources that exist already. Forbidden as
    `save_resources` when `authority` may not write one of the types (even an unchanged one).
    `index_in_database`: the built-in parameters' index rows are extracted in PostgreSQL (`index_sql`), a few
    statements for the batch; only custom parameters are evaluated in Python.
    """
    if not writes:
        return [], set()
    _require_transaction()
    keys = _unique_keys(writes)
    authority.check(resource_type for resource_type, _ in keys)
    # The parameters lock before any row lock, in the order save_resources takes them (no lock-order deadlock).
    changes_parameters = any(resource_type == "SearchParameter" for resource_type, _ in keys)
    registry = index_registry(exclusive=changes_parameters)
    extract = registry.extract_custom if index_in_database else registry.extract
    with connection.cursor() as cursor:
        existing = _lock_current_rows(cursor, keys)
        candidates = [
            (key, _without_version_meta(write.resource))
            for write, key in zip(writes, keys)
            if key in existing and not existing[key][2] and write.if_match is None
        ]
        unchanged: set[tuple[str, str]] = set()
        if candidates:
            # One JSON parameter rather than a text[] of bodies: quoting an array client-side costs a regex
            # substitution per quote character, quoting one string is a single C call.
            cursor.execute(
                "SELECT r.resource_type, r.logical_id FROM fhirstore_resource r"
                " JOIN jsonb_array_elements(%s::jsonb) AS u(item)"
                " ON r.resource_type = u.item->>0 AND r.logical_id = u.item->>1"
                " WHERE NOT r.deleted AND u.item->2 = CASE WHEN (r.body->'meta') - 'versionId' - 'lastUpdated'"
                " = '{}'::jsonb THEN r.body - 'meta' ELSE r.body #- '{meta,versionId}' #- '{meta,lastUpdated}' END",
                [orjson.dumps([[key[0], key[1], body] for key, body in candidates]).decode()],
            )
            unchanged = {(resource_type, logical_id) for resource_type, logical_id in cursor.fetchall()}
        changed = [(write, key) for write, key in zip(writes, keys) if key not in unchanged]
        results, pks = _write_locked(
            cursor,
            [write for write, _ in changed],
            [key for _, key in changed],
            existing,
            extract,
            now,
            registry if index_in_database else None,
        )
    if changes_parameters:
        _sync_search_parameters(results, pks)
    return results, unchanged


def _without_version_meta(resource: dict) -> dict:
    meta = resource.get("meta")
    if not isinstance(meta, dict):
        return resource
    kept = {name: value for name, value in meta.items() if name not in ("versionId", "lastUpdated")}
    return {**resource, "meta": kept} if kept else {name: value for name, value in resource.items() if name != "meta"}


def delete_resource(
    resource_type: str,
    logical_id: str,
    *,
    authority: WriteAuthority,
    if_match: int | None = None,
    now: datetime | None = None,
) -> StoredVersion | None:
    """Delete (logically) in the caller's transaction; the deletion is a new version without a body.

    Returns None when the resource was already deleted (deleting is idempotent); raises ResourceNotFound
    when it never existed; Forbidden when `authority` may not write this type.
    """
    _require_transaction()
    authority.check([resource_type])
    key = (resource_type, logical_id)
    if resource_type == "SearchParameter":
        index_extractor(exclusive=True)
    with connection.cursor() as cursor:
        now = now or _transaction_start(cursor)
        current = _lock_current_rows(cursor, [key]).get(key)
        if current is None:
            raise ResourceNotFound(f"{resource_type}/{logical_id} does not exist")
        _check_if_match(key, if_match, current)
        pk, version_id, deleted = current
        if deleted:
            return None
        _move_to_history(cursor, [pk])
        cursor.execute(
            "UPDATE fhirstore_resource SET version_id = %s, last_updated = %s, deleted = true, body = NULL"
            " WHERE id = %s",
            [version_id + 1, now, pk],
        )
    if resource_type == "SearchParameter":
        sync_search_parameters([(pk, None)])
    return StoredVersion(resource_type, logical_id, version_id + 1, now, True, None)


@dataclass(frozen=True)
class Revert:
    """Take back the versions `first_version`..`last_version` of a resource, which one writer (an import) wrote."""

    resource_type: str
    logical_id: str
    first_version: int
    last_version: int  # must still be the current version: a later write by anyone else wins


@dataclass
class Reverted:
    removed: list[tuple[str, str]]  # the writer created them: deleted (a new, deleted version)
    restored: list[tuple[str, str]]  # the version before the writer's is current again (as a new version)
    kept: list[tuple[str, str, int]]  # (type, id, current version): written since, or its earlier version expunged


def revert_versions(reverts: Sequence[Revert], *, now: datetime | None = None) -> Reverted:
    """Undo a writer's versions, in the caller's transaction, set-based: the rows locked in id order as every
    write locks them, the earlier versions read in one statement, the removals moved to the history and marked
    deleted in two, the restorations written as `save_resources` writes (history kept: nothing is erased).

    Only a resource whose current version is still `last_version` is touched; one written since (by a client, by
    another import) is kept and listed, as is one whose earlier version was expunged. A resource gone entirely
    (expunged) is neither. No authority check: this takes back what a checked write did."""
    _require_transaction()
    outcome = Reverted([], [], [])
    if not reverts:
        return outcome
    keys = _unique_keys([Write({"resourceType": r.resource_type, "id": r.logical_id}) for r in reverts])
    changes_parameters = any(resource_type == "SearchParameter" for resource_type, _ in keys)
    extract = index_extractor(exclusive=changes_parameters)
    with connection.cursor() as cursor:
        existing = _lock_current_rows(cursor, keys)
        current = []
        for revert, key in zip(reverts, keys):
            row = existing.get(key)
            if row is None:
                continue
            if row[1] != revert.last_version or row[2]:
                outcome.kept.append((*key, row[1]))
            else:
                current.append((revert, key, row[0]))
        wanted = [(pk, revert.first_version - 1) for revert, _, pk in current if revert.first_version > 1]
        earlier: dict[int, tuple[bool, dict | None]] = {}
        if wanted:
            cursor.execute(
                "SELECT v.resource_id, v.deleted, v.body::text FROM fhirstore_resourceversion v"
                " JOIN jsonb_array_elements(%s::jsonb) AS k(item)"
                " ON v.resource_id = (k.item->>0)::bigint AND v.version_id = (k.item->>1)::int",
                [orjson.dumps(wanted).decode()],
            )
            earlier = {pk: (deleted, body and orjson.loads(body)) for pk, deleted, body in cursor.fetchall()}
        removals, restores = [], []
        for revert, key, pk in current:
            if revert.first_version == 1 or earlier.get(pk, (False, None))[0]:
                removals.append((key, pk))
            elif pk in earlier:
                restores.append((Write(earlier[pk][1]), key))
            else:
                outcome.kept.append((*key, revert.last_version))
        now = now or _transaction_start(cursor)
        removed_pks = [pk for _, pk in removals]
        if removed_pks:
            _move_to_history(cursor, removed_pks)
            cursor.execute(
                "UPDATE fhirstore_resource SET version_id = version_id + 1, last_updated = %s, deleted = true,"
                " body = NULL WHERE id = ANY(%s)",
                [now, removed_pks],
            )
        results, pks = _write_locked(
            cursor, [write for write, _ in restores], [key for _, key in restores], existing, extract, now
        )
    outcome.removed = [key for key, _ in removals]
    outcome.restored = [key for _, key in restores]
    if changes_parameters:
        _sync_search_parameters(results, pks)
        sync_search_parameters([(pk, None) for key, pk in removals if key[0] == "SearchParameter"])
    return outcome


def reindex_resources(
    resource_type: str, ids: Sequence[str], *, params: Sequence[str] | None = None, in_database: bool = False
) -> int:
    """Re-extract the search index rows of these resources (after the parameters changed), set-based.

    Takes a page of ids (the REINDEX job's `load-ids` pages); returns how many current resources were reindexed. `params`
    (index names) limits the rebuild to those parameters' rows. Bodies and versions are not touched.

    Only the difference is written, as HAPI's reindex does: the stored rows are read and compared with the
    extracted ones, and only stale rows are deleted and missing ones added. The bodies and rows are read
    without locks; only the resources whose rows differ are then locked (FOR UPDATE, in id order as writes
    lock them) and, if their version is still the one read, corrected. A resource written meanwhile has had
    its rows replaced by that write. So a reindex that finds the rows right (most of them, after one
    parameter changed) writes nothing: no row locks, no dirtied pages, no WAL competing with the live API.
    One short transaction, which holds the parameters lock: the extraction cannot change halfway.

    `in_database`: the built-in parameters' rows are extracted in PostgreSQL (`index_sql`) into scratch tables
    and compared there; only custom parameters are evaluated in Python. Otherwise every row goes through Python.
    """
    if in_database:
        return _reindex_in_database(resource_type, ids, params)
    with transaction.atomic():
        registry = index_registry()
        kinds = _compared_kinds(resource_type, params, registry)
        only = frozenset(params) if params is not None else None
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT id, version_id, {_read_body(resource_type, params, registry)} FROM fhirstore_resource"
                " WHERE resource_type = %s AND logical_id = ANY(%s) AND NOT deleted",
                [resource_type, list(ids)],
            )
            versions, rows = {}, {}
            for pk, version_id, body in cursor.fetchall():
                versions[pk] = version_id
                rows[pk] = registry.extract(json.loads(body), only)
            differing = {
                pk
                for _, _, stale, missing in _index_differences(cursor, rows, params, kinds)
                for pk, *_ in itertools.chain(stale, missing)
            }
            if differing:
                # Locked, the stored rows are read again: another chunk may have corrected them meanwhile.
                cursor.execute(
                    "SELECT id, version_id FROM fhirstore_resource WHERE id = ANY(%s) AND NOT deleted"
                    " ORDER BY id FOR UPDATE",
                    [sorted(differing)],
                )
                still_current = {pk: rows[pk] for pk, version_id in cursor.fetchall() if versions[pk] == version_id}
                for model, columns, stale, missing in _index_differences(cursor, still_current, params, kinds):
                    _delete_stale_index_rows(cursor, model, columns, stale)
                    _copy(
                        cursor,
                        model,
                        ("resource_id", "resource_type", *columns),
                        ((pk, resource_type, *row) for pk, *row in sorted(missing)),
                    )
    return len(rows)


# Scratch tables of a reindex page (this session's, emptied at commit, and at the start of a page in case the caller's
# transaction holds several): the page's resources and the versions read, and the index rows extracted from their
# bodies, compared with the stored rows in SQL.
_SCRATCH_PAGE = "reindex_page"
_SCRATCH = {kind: f"reindex_{model._meta.db_table}" for kind, (model, _) in INDEX_COLUMNS.items()}
_SCRATCH_TABLES = (
    f"CREATE TEMP TABLE IF NOT EXISTS {_SCRATCH_PAGE} (id bigint, version_id int) ON COMMIT DELETE ROWS;"
    + "".join(
        f"CREATE TEMP TABLE IF NOT EXISTS {_SCRATCH[kind]} (LIKE {model._meta.db_table}) ON COMMIT DELETE ROWS;"
        for kind, (model, _) in INDEX_COLUMNS.items()
    )
    + "".join(f"DELETE FROM {table};" for table in (_SCRATCH_PAGE, *_SCRATCH.values()))
)
_SQL_KIND = {"tokens": "token", "strings": "string", "dates": "date", "references": "reference"}
# The page's bodies, for the extraction: read again by id, after the versions (a write committed in between is
# harmless: its resource's rows are those of its new body, written by that write, and a difference found for it is
# not corrected, its version being no longer the one read).
_PAGE_BODIES = (
    f"(SELECT r.id, r.resource_type, r.body FROM {_SCRATCH_PAGE} p JOIN fhirstore_resource r ON r.id = p.id"
    " WHERE NOT r.deleted)"
)


def _read_body(resource_type: str, params: Sequence[str] | None, registry: Registry) -> str:
    """What a Python reindex reads of each body: all of it, or for some built-in parameters only the elements their
    paths start with (the extraction looks nothing else up), so a one-parameter page transfers and parses a few
    elements instead of whole bodies. A custom parameter's FHIRPath may look anywhere: the whole body."""
    if params is None or set(params) & set(registry.by_type.get(resource_type, {})):
        return "body::text"
    firsts = sorted(
        {
            path.split(".", 1)[0]
            for p in params_for(resource_type).values()
            if p.stored_as is None and p.name in params
            for path in p.paths
        }
        | {"resourceType"}
    )
    elements = ", ".join(f"'{first}', body->'{first}'" for first in firsts)  # the registry's element names
    return f"jsonb_build_object({elements})::text"


_KIND_OF_PARAM = {
    "token": "tokens",
    "string": "strings",
    "date": "dates",
    "reference": "references",
    "number": "numbers",
    "quantity": "quantities",
}


def _compared_kinds(resource_type: str, params: Sequence[str] | None, registry: Registry) -> tuple[str, ...]:
    """The index tables (`INDEX_COLUMNS` keys) a page's rows are compared in: every one, or, for a rebuild of some
    built-in parameters only, theirs. Each comparison reads the stored rows of the page's resources, all their
    parameters, by the resource index (~5 ms a table for 1,000 Observations, the larger part of a one-parameter
    page), and a built-in parameter's rows are in the table of its kind only. A code that a custom parameter of the
    type has (or had: a deleted override), or that no parameter has (a deleted custom one, whose rows are to go),
    may have rows in any table: all are compared."""
    if not params:
        return tuple(INDEX_COLUMNS)
    built_in = {p.index_name: p.kind for p in params_for(resource_type).values() if p.stored_as is None}
    custom = registry.by_type.get(resource_type, {})
    if any(name in custom or name not in built_in for name in params):
        return tuple(INDEX_COLUMNS)
    kinds = {_KIND_OF_PARAM[built_in[name]] for name in params}
    return tuple(kind for kind in INDEX_COLUMNS if kind in kinds)


@lru_cache(maxsize=64)
def _differences_statement(only: bool, kinds: tuple[str, ...]) -> str:
    """The resources of the page whose stored rows differ from the extracted ones, in these index tables: one full
    join per table (rows on one side only), the stored rows read by the resource index."""
    condition = " AND param = ANY(%(params)s)" if only else ""
    return " UNION ".join(
        f"SELECT coalesce(w.resource_id, x.resource_id) FROM {_SCRATCH[kind]} w FULL JOIN"
        f" (SELECT resource_id, {', '.join(columns)} FROM {model._meta.db_table}"
        f" WHERE resource_id = ANY(%(page)s){condition}) x"
        f" ON w.resource_id = x.resource_id AND {' AND '.join(f'w.{column} = x.{column}' for column in columns)}"
        " WHERE w.resource_id IS NULL OR x.resource_id IS NULL"
        for kind, (model, columns) in INDEX_COLUMNS.items()
        if kind in kinds
    )


def _reindex_in_database(resource_type: str, ids: Sequence[str], params: Sequence[str] | None) -> int:
    """`reindex_resources` with the built-in parameters extracted and every row compared in PostgreSQL."""
    with transaction.atomic():
        registry = index_registry()
        with connection.cursor() as cursor:
            cursor.execute(_SCRATCH_TABLES)
            cursor.execute(
                f"INSERT INTO {_SCRATCH_PAGE} SELECT id, version_id FROM fhirstore_resource"
                " WHERE resource_type = %s AND logical_id = ANY(%s) AND NOT deleted RETURNING id, version_id",
                [resource_type, list(ids)],
            )
            versions = dict(cursor.fetchall())
            if not versions:
                return 0
            custom = registry.replacing(resource_type)
            kinds = _compared_kinds(resource_type, params, registry)
            if custom and (params is None or custom & set(params)):
                cursor.execute(f"SELECT r.id, r.body::text FROM {_PAGE_BODIES} r")
                wanted = frozenset(params) if params is not None else None
                items = [
                    (pk, resource_type, registry.extract_custom(json.loads(body), wanted))
                    for pk, body in cursor.fetchall()
                ]
                for kind, (model, columns) in INDEX_COLUMNS.items():
                    _copy_into(cursor, _SCRATCH[kind], ("resource_id", "resource_type", *columns), _rows(items, kind))
            insert_index_rows(
                cursor,
                source=_PAGE_BODIES,
                source_params={},
                targets={_SQL_KIND[kind]: table for kind, table in _SCRATCH.items() if kind in _SQL_KIND},
                skip=[(resource_type, name) for name in custom],
                only=params,
                resource_types=[resource_type],
                deduplicate=False,
            )
            only = " AND param = ANY(%(params)s)" if params is not None else ""
            # The stored rows by the resource index: a scratch table has no statistics to plan a join with.
            arguments = {"params": list(params) if params is not None else None, "page": list(versions)}
            cursor.execute(_differences_statement(params is not None, kinds), arguments)
            differing = sorted(pk for (pk,) in cursor.fetchall())
            if not differing:
                return len(versions)
            # Locked, the stored rows are compared again: another chunk may have corrected them meanwhile.
            cursor.execute(
                "SELECT id, version_id FROM fhirstore_resource WHERE id = ANY(%s) AND NOT deleted"
                " ORDER BY id FOR UPDATE",
                [differing],
            )
            arguments["still"] = [pk for pk, version_id in cursor.fetchall() if versions[pk] == version_id]
            for kind in kinds:
                model, columns = INDEX_COLUMNS[kind]
                same = " AND ".join(f"w.{column} = x.{column}" for column in columns)
                cursor.execute(
                    f"DELETE FROM {model._meta.db_table} x WHERE resource_id = ANY(%(still)s){only}"
                    f" AND NOT EXISTS (SELECT FROM {_SCRATCH[kind]} w WHERE w.resource_id = x.resource_id AND {same})",
                    arguments,
                )
                cursor.execute(
                    f"INSERT INTO {model._meta.db_table} (resource_id, resource_type, {', '.join(columns)})"
                    f" SELECT DISTINCT resource_id, resource_type, {', '.join(columns)} FROM {_SCRATCH[kind]} w"
                    f" WHERE resource_id = ANY(%(still)s) AND NOT EXISTS (SELECT FROM {model._meta.db_table} x"
                    f" WHERE x.resource_id = w.resource_id AND {same})",
                    arguments,
                )
    return len(versions)


def _index_differences(
    cursor, rows: dict[int, IndexRows], params: Sequence[str] | None, kinds: Sequence[str]
) -> Iterator[tuple[Any, Sequence[str], set[tuple], set[tuple]]]:
    """Per index table of `kinds`: (model, columns, stale rows, missing rows) of these resources, rows as (pk, *columns)."""
    pks = list(rows)
    for kind in kinds:
        model, columns = INDEX_COLUMNS[kind]
        wanted = {(pk, *row) for pk, extracted in rows.items() for row in getattr(extracted, kind)}
        stored = _stored_index_rows(cursor, model, columns, pks, params)
        yield model, columns, stored - wanted, wanted - stored


def _stored_index_rows(
    cursor, model, columns: Sequence[str], pks: Sequence[int], params: Sequence[str] | None
) -> set[tuple]:
    """(resource pk, *columns) of the rows stored for these resources (of these index names only, if given)."""
    if not pks:
        return set()
    only = " AND param = ANY(%s)" if params is not None else ""
    cursor.execute(
        f"SELECT resource_id, {', '.join(columns)} FROM {model._meta.db_table} WHERE resource_id = ANY(%s){only}",
        [list(pks), *([list(params)] if params is not None else [])],
    )
    return set(cursor.fetchall())


def _delete_stale_index_rows(cursor, model, columns: Sequence[str], stale: set[tuple]) -> None:
    """Delete these exact rows: found by the resource index, matched against the arrays of their values."""
    if not stale:
        return
    values = list(zip(*stale))
    column_types = {"value": "float8", "low": "timestamptz", "high": "timestamptz"}
    arrays = ", ".join(f"%s::{column_types.get(column, 'text')}[]" for column in columns)
    cursor.execute(
        f"DELETE FROM {model._meta.db_table} WHERE resource_id = ANY(%s) AND (resource_id, {', '.join(columns)})"
        f" IN (SELECT * FROM unnest(%s::bigint[], {arrays}))",
        [sorted({pk for pk, *_ in stale}), *(list(column) for column in values)],
    )


def index_rows_of(resource: dict) -> IndexRows:
    """The index rows a write or a reindex would store for this body now (for `$reindex-dryrun`)."""
    with transaction.atomic():
        return index_extractor()(resource)


def read_resource(resource_type: str, logical_id: str) -> StoredVersion:
    """The current version; ResourceGone (410) when it is deleted, ResourceNotFound (404) when unknown."""
    row = _current_row(resource_type, logical_id)
    if row.deleted:
        raise ResourceGone(f"{resource_type}/{logical_id} was deleted (version {row.version_id})")
    return _stored(row)


def read_version(resource_type: str, logical_id: str, version_id: int) -> StoredVersion:
    """One version (vread); ResourceGone when that version is a deletion."""
    row = _current_row(resource_type, logical_id)
    if row.version_id == version_id:
        version = _stored(row)
    else:
        old = ResourceVersion.objects.filter(resource_id=row.pk, version_id=version_id).first()
        if old is None:
            raise ResourceNotFound(f"{resource_type}/{logical_id} has no version {version_id}")
        version = StoredVersion(resource_type, logical_id, old.version_id, old.last_updated, old.deleted, old.body)
    if version.deleted:
        raise ResourceGone(f"Version {version_id} of {resource_type}/{logical_id} is a deletion")
    return version


def resource_history(
    resource_type: str, logical_id: str, *, since: datetime | None = None, offset: int = 0, count: int = 20
) -> tuple[int, list[StoredVersion]]:
    """`(total, page)`: the versions of one resource, newest first, deletions included."""
    row = _current_row(resource_type, logical_id)
    versions = (
        "SELECT version_id, last_updated, deleted, body FROM fhirstore_resource WHERE id = %(pk)s"
        " UNION ALL SELECT version_id, last_updated, deleted, body FROM fhirstore_resourceversion"
        " WHERE resource_id = %(pk)s"
    )
    where = "WHERE last_updated >= %(since)s" if since else ""
    arguments = {"pk": row.pk, "since": since, "offset": offset, "count": count}
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM ({versions}) v {where}", arguments)
        total = cursor.fetchone()[0]
        cursor.execute(
            f"SELECT version_id, last_updated, deleted, body FROM ({versions}) v {where}"
            " ORDER BY version_id DESC OFFSET %(offset)s LIMIT %(count)s",
            arguments,
        )
        page = [
            StoredVersion(
                resource_type,
                logical_id,
                version_id,
                last_updated,
                deleted,
                json.loads(body) if body is not None else None,
            )
            for version_id, last_updated, deleted, body in cursor.fetchall()
        ]
    return total, page


def _current_row(resource_type: str, logical_id: str) -> Resource:
    if not is_resource_type(resource_type):
        raise UnknownResourceType(f"Unknown resource type {resource_type!r}")
    row = Resource.objects.filter(resource_type=resource_type, logical_id=logical_id).first()
    if row is None:
        raise ResourceNotFound(f"{resource_type}/{logical_id} is not known")
    return row


def _stored(row: Resource) -> StoredVersion:
    return StoredVersion(row.resource_type, row.logical_id, row.version_id, row.last_updated, row.deleted, row.body)


def _transaction_start(cursor) -> datetime:
    """The database's clock at the start of this transaction: every write of it is stamped `meta.lastUpdated` so.

    Not the application's clock (hosts disagree), and not the commit time (unknown until it happens): an export's
    `transactionTime` is chosen before the start of every write transaction still open (`settled_time`), so a
    write that commits late still lands at or after it, and the next `_since` export finds it.
    """
    cursor.execute("SELECT now()")
    return cursor.fetchone()[0]


def settled_time() -> datetime:
    """The latest instant up to which every write is committed: now (by the clock, not the start of the caller's
    transaction: one that waited for locks gets past what committed meanwhile), or just before the start of the
    oldest other transaction of this database still open, if earlier (it may be writing, stamped with its start).

    A read after this (in a later transaction) sees every version stamped at or before it, and no write still
    to commit can get such a stamp: "everything up to it" holds, and stays the same however long a reader takes. Needs to see the other sessions' `xact_start`: the same
    database role, or `pg_read_all_stats`.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT least(clock_timestamp(), (SELECT min(xact_start) FROM pg_stat_activity"
            " WHERE datname = current_database()"
            " AND pid <> pg_backend_pid() AND backend_type = 'client backend') - interval '1 microsecond')"
        )
        return cursor.fetchone()[0]


def _require_transaction() -> None:
    if not connection.in_atomic_block:
        raise RuntimeError("writes to the FHIR store must run inside transaction.atomic()")


def _lock_current_rows(cursor, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], tuple[int, int, bool]]:
    """`{(type, id): (pk, version_id, deleted)}` of the rows that exist, locked in pk order (no deadlocks)."""
    # One JSON parameter, not two text[]: psycopg quotes an array element by element in Python (a tenth of a
    # bulk load's client CPU went there), one string in a single C call.
    cursor.execute(
        "SELECT r.id, r.resource_type, r.logical_id, r.version_id, r.deleted FROM fhirstore_resource r"
        " JOIN jsonb_array_elements(%s::jsonb) AS k(key)"
        " ON r.resource_type = k.key->>0 AND r.logical_id = k.key->>1 ORDER BY r.id FOR UPDATE OF r",
        [orjson.dumps(keys).decode()],
    )
    return {
        (resource_type, logical_id): (pk, version_id, deleted)
        for pk, resource_type, logical_id, version_id, deleted in cursor.fetchall()
    }


def _check_if_match(key: tuple[str, str], if_match: int | None, current: tuple[int, int, bool] | None) -> None:
    if if_match is None:
        return
    if current is None:
        raise PreconditionFailed(f"{key[0]}/{key[1]} does not exist, so it is not at version {if_match}")
    if current[1] != if_match:
        raise PreconditionFailed(f"{key[0]}/{key[1]} is at version {current[1]}, not {if_match} (If-Match)")


def _move_to_history(cursor, pks: Sequence[int]) -> None:
    if not pks:
        return
    cursor.execute(
        "INSERT INTO fhirstore_resourceversion (resource_id, version_id, last_updated, deleted, body)"
        " SELECT id, version_id, last_updated, deleted, body FROM fhirstore_resource WHERE id = ANY(%s)",
        [list(pks)],
    )
    _delete_index_rows(cursor, pks)


def _delete_index_rows(cursor, pks: Sequence[int]) -> None:
    for model in INDEX_TABLES:
        cursor.execute(f"DELETE FROM {model._meta.db_table} WHERE resource_id = ANY(%s)", [list(pks)])


def _allocate_pks(cursor, count: int) -> list[int]:
    if not count:
        return []
    cursor.execute(
        "SELECT nextval(pg_get_serial_sequence('fhirstore_resource', 'id')) FROM generate_series(1, %s)", [count]
    )
    return [pk for (pk,) in cursor.fetchall()]


def _write_index_rows(cursor, items: Iterable[tuple[int, str, IndexRows]]) -> None:
    items = list(items)
    for kind, (model, columns) in INDEX_COLUMNS.items():
        _copy(cursor, model, ("resource_id", "resource_type", *columns), _rows(items, kind))


def _rows(items: list[tuple[int, str, IndexRows]], kind: str) -> Iterator[tuple]:
    for pk, resource_type, rows in items:
        for row in getattr(rows, kind):
            yield (pk, resource_type, *row)


def _copy(cursor, model, columns: Sequence[str], rows: Iterable[tuple]) -> None:
    _copy_into(cursor, model._meta.db_table, columns, rows)


def _copy_into(cursor, table: str, columns: Sequence[str], rows: Iterable[tuple]) -> None:
    rows = iter(rows)
    first = next(rows, None)
    if first is None:
        return
    with connection.wrap_database_errors, cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        copy.write_row(first)
        for row in rows:
            copy.write_row(row)


@contextmanager
def _concurrent_creation_is_a_conflict() -> Iterator[None]:
    """A unique violation while writing means a concurrent transaction created the same resource first."""
    try:
        yield
    except IntegrityError as error:
        raise VersionConflict("Another request created the same resource at the same time; retry") from error
