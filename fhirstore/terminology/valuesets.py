"""ValueSet expansion: a `compose` turned into one SQL query over the loaded code systems, run on the fly
(with a size limit) or stored as a pre-expansion; and `ValueSet/$validate-code` on either.

Each `include` is a SELECT over one code system version's concepts, narrowed by its `concept` list and
its `filter`s (ANDed): `is-a`, `descendent-of`, `is-not-a` (the closure), `=`, `in`, `not-in` and
`regex` (the concept's code or display, or a stored property), and by the codes of the ValueSets it
imports (`valueSet`: their stored expansion, or their compose as SQL). Includes are UNIONed and the excludes taken
away (EXCEPT). A stored expansion is used when it is EXPANDED; a new current version of a code system it
used makes it stale (`storage.mark_expansions_stale`).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models.functions import Now

from fhirstore.exceptions import FhirStoreError, InvalidRequest, UnsupportedSearch
from fhirstore.fhirdates import format_instant
from fhirstore.models import Resource
from fhirstore.terminology.exceptions import ExpansionTooCostly, UnknownValueSet
from fhirstore.terminology.lookup import displays_in_language, resolve_version
from fhirstore.terminology.models import (
    CodeSystemVersion,
    ExpansionConcept,
    ExpansionStatus,
    ValueSetExpansion,
)

CODE_PROPERTIES = ("code", "concept")  # filter properties that mean the concept itself
CLOSURE_SQL = "SELECT descendant FROM terminology_closure WHERE code_system_version_id = %s AND ancestor = %s"
STORED_ACTIVE_SQL = (
    "AND NOT EXISTS (SELECT 1 FROM terminology_conceptproperty p JOIN terminology_codesystemversion v"
    " ON v.id = p.code_system_version_id WHERE v.system = e.system AND v.version = e.version"
    " AND p.code = e.code AND p.property = 'inactive' AND p.value = 'true')"
)
ACTIVE_SQL = (
    "AND NOT EXISTS (SELECT 1 FROM terminology_conceptproperty p WHERE p.code_system_version_id = "
    "c.code_system_version_id AND p.code = c.code AND p.property = 'inactive' AND p.value = 'true')"
)


@dataclass
class _Sql:
    text: list[str] = field(default_factory=list)
    params: list[Any] = field(default_factory=list)

    def add(self, text: str, *params: Any) -> None:
        self.text.append(text)
        self.params.extend(params)


@dataclass(frozen=True)
class ComposeQuery:
    """The SQL of a compose's codes (columns: system, version, code, display, abstract) and what it used."""

    sql: str
    params: list[Any]
    systems: list[str]
    version_ids: list[int]


def compose_query(compose: Mapping[str, Any], *, active_only: bool = False) -> ComposeQuery:
    """The compose's codes as SQL; InvalidRequest for what cannot be expanded, UnknownCodeSystem (404).
    Inactive concepts (a stored `inactive` property true: SNOMED's, LOINC's deprecated) are left out when
    `active_only` (`$expand`'s activeOnly) or the compose says `inactive: false`."""
    systems: list[str] = []
    version_ids: list[int] = []
    part = _compose_sql(compose, systems, version_ids, active_only, ())
    return ComposeQuery(part.sql, part.params, sorted(set(systems)), sorted(set(version_ids)))


def _compose_sql(
    compose: Mapping[str, Any],
    systems: list[str],
    version_ids: list[int],
    active_only: bool,
    importing: tuple[str, ...],
) -> _Part:
    if not isinstance(compose, Mapping) or not compose.get("include"):
        raise InvalidRequest("The ValueSet has no compose.include to expand")
    active_only = active_only or compose.get("inactive") is False
    parts = [
        _include_sql(include, systems, version_ids, active_only, importing) for include in _list(compose, "include")
    ]
    excluded = [_include_sql(exclude, systems, version_ids, False, importing) for exclude in _list(compose, "exclude")]
    sql = " UNION ".join(f"({part.sql})" for part in parts)
    params = [p for part in parts for p in part.params]
    if excluded:
        sql = f"SELECT * FROM ({sql}) included EXCEPT ({' UNION '.join(f'({e.sql})' for e in excluded)})"
        params += [p for part in excluded for p in part.params]
    return _Part(sql, params)


@dataclass(frozen=True)
class _Part:
    sql: str
    params: list[Any]


def _list(compose: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    value = compose.get(key) or []
    if not isinstance(value, list) or not all(isinstance(item, Mapping) for item in value):
        raise InvalidRequest(f"compose.{key} must be a list of objects")
    return value


def _include_sql(
    include: Mapping[str, Any],
    systems: list[str],
    version_ids: list[int],
    active_only: bool,
    importing: tuple[str, ...],
) -> _Part:
    """One include (or exclude): the system's concepts narrowed by its concept list and filters, and by the
    codes of every ValueSet it imports (`valueSet`: FHIR's intersection); without a system, the codes of
    the imported ValueSets (in all of them)."""
    imports = include.get("valueSet") or []
    if not isinstance(imports, list) or not all(isinstance(url, str) and url for url in imports):
        raise InvalidRequest("compose.include.valueSet must be a list of canonical URLs")
    system = include.get("system")
    if not imports and (not isinstance(system, str) or not system):
        raise InvalidRequest("Every compose.include and exclude needs a system or a valueSet")
    imported = [_imported_sql(url, systems, version_ids, active_only, importing) for url in imports]
    if not system:
        first, *others = imported
        sql = _Sql([f"SELECT * FROM ({first.sql}) imported WHERE true"], list(first.params))
        for other in others:
            sql.add(
                f"AND (imported.system, imported.code) IN (WITH other AS MATERIALIZED ({other.sql}) "
                f"SELECT system, code FROM other)",
                *other.params,
            )  # run once, not once per row
        return _Part(" ".join(sql.text), sql.params)
    if not isinstance(system, str):
        raise InvalidRequest("compose.include.system must be a URI")
    version = resolve_version(system, include.get("version") or None)
    systems.append(system)
    version_ids.append(version.id)
    sql = _Sql()
    sql.add(
        "SELECT %s::text AS system, %s::text AS version, c.code, c.display, c.abstract FROM terminology_concept c"
        " WHERE c.code_system_version_id = %s",
        system,
        version.version or "",
        version.id,
    )
    codes = [concept.get("code") for concept in include.get("concept") or [] if isinstance(concept, Mapping)]
    if include.get("concept"):
        sql.add("AND c.code = ANY(%s::text[])", [code for code in codes if isinstance(code, str)])
    for concept_filter in include.get("filter") or []:
        _filter_sql(concept_filter, version.id, sql)
    if active_only:
        sql.add(ACTIVE_SQL)
    for part in imported:
        sql.add(
            f"AND c.code IN (WITH imported AS MATERIALIZED ({part.sql}) SELECT code FROM imported WHERE system = %s)",
            *part.params,
            system,
        )
    return _Part(" ".join(sql.text), sql.params)


def _imported_sql(
    url: str, systems: list[str], version_ids: list[int], active_only: bool, importing: tuple[str, ...]
) -> _Part:
    """The codes of an imported ValueSet (`url` or `url|version`, a stored one): its stored expansion when
    EXPANDED, else its compose (imports of imports too; a cycle is refused)."""
    if url in importing:
        raise InvalidRequest(f"The ValueSet {url} imports itself ({' → '.join([*importing, url])})")
    canonical, _, version = url.partition("|")
    value_set = stored_value_set(url=canonical, version=version or None)
    stored = _expanded(value_set)
    if stored is None:
        return _compose_sql(value_set.get("compose") or {}, systems, version_ids, active_only, (*importing, url))
    systems.extend(stored.systems)
    version_ids.extend(stored.built_from)
    return _Part(
        "SELECT e.system::text AS system, e.version::text AS version, e.code, e.display, false AS abstract "
        "FROM terminology_expansionconcept e WHERE e.expansion_id = %s"
        + (f" {STORED_ACTIVE_SQL}" if active_only else ""),
        [stored.pk],
    )


def _filter_sql(concept_filter: Any, version_id: int, sql: _Sql) -> None:
    if not isinstance(concept_filter, Mapping):
        raise InvalidRequest("compose.include.filter must be objects")
    prop, op, value = concept_filter.get("property"), concept_filter.get("op"), concept_filter.get("value")
    if not all(isinstance(item, str) and item for item in (prop, op, value)):
        raise InvalidRequest("A compose filter needs property, op and value")
    if op in ("is-a", "descendent-of", "is-not-a"):
        if prop not in CODE_PROPERTIES:
            raise UnsupportedSearch(f"The filter op {op!r} applies to the property 'concept', not {prop!r}")
        negation = "NOT " if op == "is-not-a" else ""
        sql.add(f"AND c.code {negation}IN ({CLOSURE_SQL})", version_id, value)
        if op == "descendent-of":
            sql.add("AND c.code <> %s", value)
        return
    if op not in ("=", "in", "not-in", "regex"):
        raise UnsupportedSearch(
            f"The filter op {op!r} is not supported (is-a, descendent-of, is-not-a, =, in, not-in, regex)"
        )
    comparison, argument = {
        "=": ("= %s", value),
        "in": ("= ANY(%s::text[])", value.split(",")),
        "not-in": ("= ANY(%s::text[])", value.split(",")),
        "regex": ("~ %s", f"^(?:{value})$"),
    }[op]
    negation = "NOT " if op == "not-in" else ""
    if prop in CODE_PROPERTIES or prop == "display":
        column = "c.code" if prop in CODE_PROPERTIES else "c.display"
        sql.add(f"AND {negation}({column} {comparison})", argument)
    else:
        sql.add(
            f"AND {negation}EXISTS (SELECT 1 FROM terminology_conceptproperty p WHERE p.code_system_version_id ="
            f" c.code_system_version_id AND p.code = c.code AND p.property = %s AND p.value {comparison})",
            prop,
            argument,
        )


@dataclass(frozen=True)
class ExpansionPage:
    total: int
    offset: int
    contains: list[tuple[str, str, str, str, bool]]  # (system, version, code, display, abstract)
    stored: bool  # answered from a stored pre-expansion
    status: str = ""  # the stored expansion's status (a stored ValueSet's), "" for one sent inline


def expand(
    value_set: Mapping[str, Any],
    *,
    text: str = "",
    offset: int = 0,
    count: int | None = None,
    active_only: bool = False,
    display_language: str = "",
) -> ExpansionPage:
    """One page of a ValueSet's expansion: from its stored expansion when EXPANDED, else on the fly; without
    inactive concepts when `active_only`; displays in `display_language` when asked.

    On the fly, an answer of more than TERMINOLOGY_EXPANSION_MAX_CODES codes is refused (ExpansionTooCostly);
    ask for pages with `count`."""
    page = _expand(value_set, text=text, offset=offset, count=count, active_only=active_only)
    if display_language:
        page = ExpansionPage(
            page.total, page.offset, _in_language(page.contains, display_language), page.stored, page.status
        )
    return page


def _in_language(
    contains: list[tuple[str, str, str, str, bool]], language: str
) -> list[tuple[str, str, str, str, bool]]:
    displays: dict[tuple[str, str], dict[str, str]] = {}
    for system, version, code, display, _ in contains:
        displays.setdefault((system, version), {})[code] = display
    for (system, version), by_code in displays.items():
        version_id = (
            CodeSystemVersion.objects.filter(system=system, version=version).values_list("id", flat=True).first()
        )
        if version_id is not None:
            by_code.update(displays_in_language(version_id, by_code, language))
    return [
        (system, version, code, displays[(system, version)][code], abstract)
        for system, version, code, _, abstract in contains
    ]


def _expand(
    value_set: Mapping[str, Any], *, text: str, offset: int, count: int | None, active_only: bool
) -> ExpansionPage:
    limit = settings.TERMINOLOGY_EXPANSION_MAX_CODES
    if count is not None and count > limit:
        raise ExpansionTooCostly(f"count={count} is more than this server returns at once ({limit})")
    stored = _expanded(value_set)
    if stored is not None:
        return _stored_page(stored, text=text, offset=offset, count=count, active_only=active_only)
    query = compose_query(value_set.get("compose") or {}, active_only=active_only)
    where, params = ("", [])
    if text:
        where, params = " WHERE expansion.display ILIKE %s OR expansion.code ILIKE %s", _text_patterns(text)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM ({query.sql}) expansion{where}", [*query.params, *params])
        total = cursor.fetchone()[0]
        _check_size(total, count, limit)
        cursor.execute(
            f"SELECT * FROM ({query.sql}) expansion{where} ORDER BY system, code OFFSET %s LIMIT %s",
            [*query.params, *params, offset, count if count is not None else total],
        )
        contains = [tuple(row) for row in cursor.fetchall()]
    return ExpansionPage(total, offset, contains, False, expansion_status(value_set))


def _text_patterns(text: str) -> list[str]:
    """`filter`'s ILIKE patterns, display containing the text and code starting with it, for the stored and the
    on-the-fly expansion alike: the text taken literally (`%`, `_` and `\\` escaped, as Django's icontains does)."""
    literal = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return [f"%{literal}%", f"{literal}%"]


# A page of a stored expansion: its rows by position, straight from the table's key (expansion, position).
STORED_RANGE_SQL = (
    "SELECT e.system, e.version, e.code, e.display FROM terminology_expansionconcept e"
    " WHERE e.expansion_id = %s AND e.position > %s AND e.position <= %s ORDER BY e.position"
)
STORED_FILTERED_SQL = (
    "SELECT e.system, e.version, e.code, e.display FROM terminology_expansionconcept e WHERE e.expansion_id = %s"
)


def _stored_page(
    stored: ValueSetExpansion, *, text: str, offset: int, count: int | None, active_only: bool
) -> ExpansionPage:
    """A page of a stored expansion. Unfiltered, it is positions offset + 1 … offset + count and the total is
    the one stored with it: one range read of the key, no count(*) nor OFFSET. Filtered (`text`, `activeOnly`),
    counted and paged as on the fly. Rows as tuples: 10,000 model instances took longer than the on-the-fly
    query they should beat (docs/terminology.md)."""
    limit = settings.TERMINOLOGY_EXPANSION_MAX_CODES
    with connection.cursor() as cursor:
        if not text and not active_only:
            total = stored.total
            _check_size(total, count, limit)
            cursor.execute(STORED_RANGE_SQL, [stored.pk, offset, offset + (count if count is not None else total)])
        else:
            where, params = [STORED_FILTERED_SQL], [stored.pk]
            if text:
                where.append("AND (e.display ILIKE %s OR e.code ILIKE %s)")
                params += _text_patterns(text)
            if active_only:
                where.append(STORED_ACTIVE_SQL)
            sql = " ".join(where)
            cursor.execute(f"SELECT count(*) FROM ({sql}) filtered", params)
            total = cursor.fetchone()[0]
            _check_size(total, count, limit)
            cursor.execute(
                f"{sql} ORDER BY e.position OFFSET %s LIMIT %s",
                [*params, offset, count if count is not None else total],
            )
        contains = [(system, version, code, display, False) for system, version, code, display in cursor.fetchall()]
    return ExpansionPage(total, offset, contains, True, ExpansionStatus.EXPANDED)


def expansion_status(value_set: Mapping[str, Any]) -> str:
    """The pre-expansion status of a stored ValueSet: NOT_EXPANDED (also: stale, changed since), EXPANDING,
    EXPANDED or FAILED; "" for one sent inline."""
    source, source_version = _source(value_set)
    if source_version is None:
        return ""
    row = (
        ValueSetExpansion.objects.filter(url=value_set.get("url") or "", version=value_set.get("version") or "")
        .values_list("status", "source", "source_version")
        .first()
    )
    if row is None or (row[0] != ExpansionStatus.EXPANDING and (row[1], row[2]) != (source, source_version)):
        return ExpansionStatus.NOT_EXPANDED
    return row[0]


def invalidate_expansion(value_set: Mapping[str, Any]) -> int:
    """`$invalidate-expansion`: the stored expansion of this ValueSet is stale (expanded again by the next
    VALUESET_EXPAND run)."""
    return ValueSetExpansion.objects.filter(
        url=value_set.get("url") or "", version=value_set.get("version") or ""
    ).update(status=ExpansionStatus.NOT_EXPANDED, updated_at=Now())


def _check_size(total: int, count: int | None, limit: int) -> None:
    if count is None and total > limit:
        raise ExpansionTooCostly(
            f"The expansion has {total} codes, more than this server returns at once ({limit}, "
            f"TERMINOLOGY_EXPANSION_MAX_CODES): ask for pages with count and offset, or a "
            f"narrower ValueSet"
        )


def _expanded(value_set: Mapping[str, Any]) -> ValueSetExpansion | None:
    """The stored expansion of this very ValueSet version: a stored one, unchanged since it was expanded."""
    url, (source, source_version) = value_set.get("url"), _source(value_set)
    if not isinstance(url, str) or source_version is None:
        return None
    return ValueSetExpansion.objects.filter(
        url=url,
        version=value_set.get("version") or "",
        source=source,
        source_version=source_version,
        status=ExpansionStatus.EXPANDED,
    ).first()


def expansion_resource(
    value_set: Mapping[str, Any], page: ExpansionPage, *, text: str = "", count: int | None = None
) -> dict:
    """The ValueSet with its `expansion` (FHIR R4), the compose left out."""
    resource = {key: value for key, value in value_set.items() if key not in ("compose", "expansion", "text")}
    parameters = [{"name": "offset", "valueInteger": page.offset}]
    if count is not None:
        parameters.append({"name": "count", "valueInteger": count})
    if text:
        parameters.append({"name": "filter", "valueString": text})
    parameters.append({"name": "expansion-source", "valueString": "stored" if page.stored else "on-the-fly"})
    if page.status:
        parameters.append({"name": "expansion-status", "valueCode": page.status})
    contains = []
    for system, version, code, display, abstract in page.contains:
        item = {"system": system, **({"version": version} if version else {}), "code": code, "display": display}
        if abstract:
            item["abstract"] = True
        contains.append(item)
    return {
        **resource,
        "resourceType": "ValueSet",
        "expansion": {
            "identifier": f"urn:uuid:{uuid.uuid4()}",
            "timestamp": format_instant(_now()),
            "total": page.total,
            "offset": page.offset,
            "parameter": parameters,
            "contains": contains,
        },
    }


def stored_value_set(*, url: str | None = None, version: str | None = None, logical_id: str | None = None) -> dict:
    """A ValueSet resource of the store by id, or by canonical url (and version); UnknownValueSet (404)."""
    rows = Resource.objects.filter(resource_type="ValueSet", deleted=False)
    if logical_id is not None:
        rows = rows.filter(logical_id=logical_id)
    else:
        rows = rows.filter(body__url=url)
        if version:
            rows = rows.filter(body__version=version)
    body = rows.order_by("-last_updated").values_list("body", flat=True).first()
    if body is None:
        raise UnknownValueSet(f"No ValueSet {logical_id or url!r}{f' version {version!r}' if version else ''}")
    return body


def validate_in_value_set(value_set: Mapping[str, Any], system: str, code: str) -> tuple[bool, str]:
    """(whether (system, code) is in the ValueSet, its display)."""
    stored = _expanded(value_set)
    if stored is not None:
        row = (
            ExpansionConcept.objects.filter(expansion=stored, system=system, code=code)
            .values_list("display", flat=True)
            .first()
        )
        return row is not None, row or ""
    query = compose_query(value_set.get("compose") or {})
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT display FROM ({query.sql}) expansion WHERE system = %s AND code = %s LIMIT 1",
            [*query.params, system, code],
        )
        row = cursor.fetchone()
    return row is not None, row[0] if row else ""


STALE_SQL = """
SELECT r.logical_id FROM fhirstore_resource r
LEFT JOIN terminology_valuesetexpansion e
       ON e.url = r.body->>'url' AND e.version = coalesce(r.body->>'version', '')
WHERE r.resource_type = 'ValueSet' AND NOT r.deleted AND r.body ? 'url' AND r.body ? 'compose'
  AND (e.id IS NULL
       OR e.status = 'NOT_EXPANDED'
       OR (e.status = 'EXPANDING' AND e.updated_at < now() - interval '10 minutes')
       OR (e.status IN ('EXPANDED', 'FAILED')
           AND (e.source <> r.logical_id OR e.source_version IS DISTINCT FROM r.version_id)))
ORDER BY r.logical_id
LIMIT %s
"""


def stale_value_sets(limit: int) -> list[str]:
    """Ids of the stored ValueSets (with a url and a compose) whose expansion is missing or stale: never
    expanded, marked stale by a new current code system version, changed since (another versionId), or
    left EXPANDING for 10 minutes by an expansion that died."""
    with connection.cursor() as cursor:
        cursor.execute(STALE_SQL, [limit])
        return [row[0] for row in cursor.fetchall()]


def store_expansion(value_set: Mapping[str, Any]) -> ValueSetExpansion:
    """Expand a ValueSet (with a url) and keep it: EXPANDED with its codes, or FAILED with the error (raised
    again). The row is EXPANDING meanwhile; answers keep coming on the fly until it is EXPANDED."""
    url, version = value_set.get("url"), value_set.get("version") or ""
    if not isinstance(url, str) or not url:
        raise InvalidRequest("Only a ValueSet with a url can be pre-expanded")
    source, source_version = _source(value_set)
    expansion, _ = ValueSetExpansion.objects.get_or_create(url=url, version=version)
    rows = ValueSetExpansion.objects.filter(pk=expansion.pk)
    rows.update(status=ExpansionStatus.EXPANDING, source=source, source_version=source_version, updated_at=Now())
    try:
        query = compose_query(value_set.get("compose") or {})
    except FhirStoreError as error:
        rows.update(status=ExpansionStatus.FAILED, error=error.message, updated_at=Now())
        raise
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("DELETE FROM terminology_expansionconcept WHERE expansion_id = %s", [expansion.pk])
        cursor.execute(
            "INSERT INTO terminology_expansionconcept (expansion_id, position, system, version, code, display)"
            " SELECT %s, row_number() OVER (ORDER BY system, code), system, version, code, display"
            f" FROM ({query.sql}) expansion",
            [expansion.pk, *query.params],
        )
        rows.update(
            status=ExpansionStatus.EXPANDED,
            error="",
            total=cursor.rowcount,
            systems=query.systems,
            built_from=query.version_ids,
            updated_at=Now(),
        )
    expansion.refresh_from_db()
    return expansion


def _source(value_set: Mapping[str, Any]) -> tuple[str, int | None]:
    """(id, versionId) of a stored ValueSet; ("", None) for one sent inline."""
    version_id = (value_set.get("meta") or {}).get("versionId")
    return str(value_set.get("id") or ""), int(version_id) if str(version_id or "").isdigit() else None


def _now():
    with connection.cursor() as cursor:
        cursor.execute("SELECT now()")
        return cursor.fetchone()[0]


def expansion_subquery(url: str) -> tuple[str, list[Any]]:
    """SQL of the (system, code) pairs of a stored ValueSet (by canonical url, `url|version` too), for the
    `:in` / `:not-in` search modifiers: its stored expansion when EXPANDED, else its compose."""
    url, _, version = url.partition("|")
    value_set = stored_value_set(url=url, version=version or None)
    stored = _expanded(value_set)
    if stored is not None:
        return "SELECT system, code FROM terminology_expansionconcept WHERE expansion_id = %s", [stored.pk]
    query = compose_query(value_set.get("compose") or {})
    return query.sql, query.params
