"""The built-in search parameters compiled to SQL: index rows extracted inside PostgreSQL, for a set of resources.

A bulk import or a reindex page would otherwise parse every body in Python and walk it for each parameter
(`search_params.extractor_for`): ~60 µs a resource, the larger part of an import's client CPU. Here each
built-in parameter's dotted path becomes an SQL/JSON path (`name.family` → `$."name"[*]."family"[*]`, lax
mode: a list anywhere on the way is walked through, as `_walk` does) and one `INSERT … SELECT` per index
table fills the rows of a whole batch from the stored bodies. The value rules of each kind are the Python
ones, written in SQL: tokens (boolean, code, Coding, CodeableConcept, Identifier), strings (a string, or the
parts of a HumanName / Address), dates (`fhir_date_range`, a migration's function, `fhirdates`' ranges),
references (relative literal references to a known type, restricted to the parameter's targets).

The Python extraction stays the oracle (a test compares both on the Synthea fixtures) and the path of what
SQL does not express:
- custom SearchParameters (FHIRPath): `custom_params` evaluates them, and a custom parameter that replaces a
  built-in one takes that one out of the SQL (`skip`);
- the normalized form of a string that is not plain ASCII (Unicode NFKD, accents dropped, `casefold`): the
  statement returns those strings and `normalize_string` completes their rows in Python. For ASCII text,
  `lower()` under the "C" collation is exactly that normalization;
- kinds without a rule here (`number`, `quantity`: custom parameters only today): `PYTHON_ONLY_PARAMS`.

Values that are not valid FHIR JSON are where the two may differ: a list directly inside a list (lax SQL/JSON
paths unwrap it, `_walk` skips it), a Coding nested in a Coding's `coding`, a `system` that is an object.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from fhirstore.resource_types import RESOURCE_TYPES
from fhirstore.search_params import INDEXED_TEXT_LENGTH, REGISTRY, SearchParam, normalize_string

logger = logging.getLogger(__name__)

SQL_KINDS = ("token", "string", "date", "reference")  # the kinds with a rule in SQL here
TABLE_OF_KIND = {
    "token": "fhirstore_tokenindex",
    "string": "fhirstore_stringindex",
    "date": "fhirstore_dateindex",
    "reference": "fhirstore_referenceindex",
}
_STRING_PARTS = (
    "text",
    "family",
    "given",
    "prefix",
    "suffix",
    "line",
    "city",
    "district",
    "state",
    "postalCode",
    "country",
)  # as `search_params._STRING_PARTS`


@dataclass(frozen=True)
class CompiledParam:
    resource_type: str
    name: str  # the `param` column of its rows
    kind: str
    json_paths: tuple[str, ...]
    first_elements: tuple[str, ...]  # each path's first element: most are absent from a resource, and `?` is cheap
    targets: tuple[str, ...]


def json_path(path: str) -> str:
    """A dotted element path as a lax SQL/JSON path that walks through lists, as `search_params._walk` does."""
    return "$" + "".join(f'."{step}"[*]' for step in path.split("."))


def _compiles(param: SearchParam) -> bool:
    return param.kind in SQL_KINDS and all(step.isidentifier() for path in param.paths for step in path.split("."))


@lru_cache(maxsize=1)
def compiled_params() -> tuple[CompiledParam, ...]:
    """Every built-in parameter with rows of its own whose extraction SQL expresses."""
    return tuple(
        CompiledParam(
            p.resource_type,
            p.name,
            p.kind,
            tuple(json_path(path) for path in p.paths),
            tuple(path.split(".")[0] for path in p.paths),
            p.targets,
        )
        for params in REGISTRY.values()
        for p in params.values()
        if p.stored_as is None and _compiles(p)
    )


@lru_cache(maxsize=1)
def python_only_params() -> tuple[tuple[str, str], ...]:
    """(type, name) of the built-in parameters SQL does not express: they are extracted in Python (and logged)."""
    missing = tuple(
        sorted(
            (p.resource_type, p.name)
            for params in REGISTRY.values()
            for p in params.values()
            if p.stored_as is None and not _compiles(p)
        )
    )
    if missing:
        logger.info("search parameters extracted in Python, not in SQL: %s", ", ".join(f"{t}.{n}" for t, n in missing))
    return missing


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _param_table(kind: str) -> str:
    """The compiled parameters of one kind as a VALUES list: (resource_type, param, path, targets)."""
    rows = [
        f"({_literal(p.resource_type)}, {_literal(p.name)}, {_literal(path)}::jsonpath, {_literal(first)}, "
        + (f"ARRAY[{', '.join(map(_literal, p.targets))}]::text[])" if p.targets else "NULL::text[])")
        for p in compiled_params()
        if p.kind == kind
        for path, first in zip(p.json_paths, p.first_elements)
    ]
    return f"(VALUES {', '.join(rows)}) AS p(resource_type, param, path, first, targets)"


# The values of one kind's parameters in the bodies of the source rows `r` (id, resource_type, body), as
# (r.id, r.resource_type, p.param, v): v each JSON value a path finds; _WANTED: %(skip)s: "type param" pairs left to
# Python; %(only)s: the index names wanted, or NULL for all.
_VALUES = (
    " FROM (SELECT id, resource_type, body || '{{}}'::jsonb AS body FROM {source} s OFFSET 0) r"
    " JOIN {params} ON p.resource_type = r.resource_type AND r.body ? p.first"
    " CROSS JOIN LATERAL jsonb_path_query(r.body, p.path) AS v"
)
_WANTED = (
    " WHERE NOT (r.resource_type || ' ' || p.param) = ANY(%(skip)s)"
    " AND (%(only)s::text[] IS NULL OR p.param = ANY(%(only)s::text[]))"
)

_L = INDEXED_TEXT_LENGTH

# `search_params._tokens`: a CodeableConcept's codings, else the value itself; then a boolean, a string, a
# Coding's code, an Identifier's value. `str(value.get("system", ""))` for the system. One set-returning call
# per value (each costs a few µs in PostgreSQL; expressions far less).
_TOKEN_SELECT = (
    "SELECT DISTINCT r.id, r.resource_type, p.param, left(t.system, {L}), left(t.code, {L}) "
    + _VALUES
    + " CROSS JOIN LATERAL jsonb_array_elements(CASE WHEN jsonb_typeof(v->'coding') = 'array' THEN v->'coding'"
    "  ELSE jsonb_build_array(v) END) AS c"
    " CROSS JOIN LATERAL (SELECT"
    "  CASE jsonb_typeof(c->'system') WHEN 'string' THEN c->>'system' WHEN 'null' THEN 'None'"
    "   WHEN 'boolean' THEN initcap(c->>'system') WHEN 'number' THEN c->>'system' ELSE '' END AS system,"
    "  CASE jsonb_typeof(c) WHEN 'boolean' THEN c::text WHEN 'string' THEN c #>> '{{}}'"
    "   WHEN 'object' THEN CASE WHEN jsonb_typeof(c->'coding') = 'array' THEN NULL"
    "    WHEN jsonb_typeof(c->'code') = 'string' THEN c->>'code'"
    "    WHEN jsonb_typeof(c->'value') = 'string' THEN c->>'value' END END AS code) AS t"
    + _WANTED
    + " AND t.code <> ''"
)

# `search_params._strings`: a string, or the string parts (one level of list) of a HumanName or Address: the
# parts gathered in one array (an absent one is a JSON null), walked two levels deep by one lax path.
_STRING_FOUND = (
    "SELECT DISTINCT r.id, r.resource_type, p.param, s.x #>> '{{}}' AS text "
    + _VALUES
    + " CROSS JOIN LATERAL jsonb_path_query(CASE jsonb_typeof(v) WHEN 'string' THEN jsonb_build_array(v)"
    "  WHEN 'object' THEN jsonb_build_array(" + ", ".join(f"v->{_literal(part)}" for part in _STRING_PARTS) + ")"
    "  END, 'lax $[*][*]') AS s(x)" + _WANTED + " AND jsonb_typeof(s.x) = 'string' AND s.x <> '\"\"'"
)

# `search_params._date_range`: a date/dateTime/instant, or a Period (an absent or unreadable end is open).
_DATE_SELECT = (
    "SELECT DISTINCT r.id, r.resource_type, p.param, d.low, d.high "
    + _VALUES
    + " CROSS JOIN LATERAL (SELECT f.low, f.high"
    "  FROM fhir_date_range(CASE WHEN jsonb_typeof(v) = 'string' THEN v #>> '{{}}' END) AS f"
    "  UNION ALL SELECT coalesce(s.low, '0001-01-01 00:00:00+00'), coalesce(e.high, '9999-12-31 23:59:59.999999+00')"
    "  FROM (SELECT WHERE jsonb_typeof(v) = 'object' AND (v ? 'start' OR v ? 'end')) AS period"
    "  LEFT JOIN LATERAL fhir_date_range(CASE WHEN jsonb_typeof(v->'start') = 'string' THEN v->>'start' END) AS s"
    "   ON true"
    "  LEFT JOIN LATERAL fhir_date_range(CASE WHEN jsonb_typeof(v->'end') = 'string' THEN v->>'end' END) AS e"
    "   ON true) AS d(low, high)" + _WANTED
)

# `search_params._add_reference`: a relative literal reference `Type/id[/_history/v]` to a known type. Split by
# position, not by `regexp_match` (a regular expression with captures costs ~50x one without in PostgreSQL), and
# the id checked as `resource_types.ID_PATTERN` (1-64 of [A-Za-z0-9.-], and Python's `$` admits one final
# newline) by character classes: a bounded repeat `{1,64}` costs PostgreSQL's regex engine ~10x more.
_REFERENCE_SELECT = (
    "SELECT DISTINCT r.id, r.resource_type, p.param, split_part(t.ref, '/', 1), split_part(t.ref, '/', 2) "
    + _VALUES
    + " CROSS JOIN LATERAL (SELECT v->>'reference' WHERE jsonb_typeof(v->'reference') = 'string') AS t(ref)"
    + _WANTED
    + " AND (length(t.ref) - length(replace(t.ref, '/', '')) = 1"
    "  OR (length(t.ref) - length(replace(t.ref, '/', '')) = 3 AND split_part(t.ref, '/', 3) = '_history'))"
    " AND split_part(t.ref, '/', 1) = ANY(%(types)s)"
    " AND length(rtrim(split_part(t.ref, '/', 2), E'\\n')) BETWEEN 1 AND 64"
    " AND split_part(t.ref, '/', 2) !~ '\\n.'"
    " AND split_part(t.ref, '/', 2) !~ '[^A-Za-z0-9.\\n-]'"
    " AND (p.targets IS NULL OR split_part(t.ref, '/', 1) = ANY(p.targets))"
)

COLUMNS = {
    "token": ("param", "system", "code"),
    "string": ("param", "normalized", "exact"),
    "date": ("param", "low", "high"),
    "reference": ("param", "target_type", "target_id"),
}


@lru_cache(maxsize=None)
def _statement(kind: str, source: str, target: str) -> str:
    columns = ", ".join(("resource_id", "resource_type", *COLUMNS[kind]))
    params = _param_table(kind)
    if kind == "string":
        # One statement: the ASCII strings inserted, the others returned for Python to normalize.
        found = _STRING_FOUND.format(source=source, params=params)
        return (
            f"WITH found AS ({found}), inserted AS (INSERT INTO {target} ({columns})"
            f' SELECT DISTINCT id, resource_type, param, left(lower(text COLLATE "C"), {_L}), left(text, {_L})'
            f" FROM found WHERE octet_length(text) = char_length(text))"
            f" SELECT id, resource_type, param, text FROM found WHERE octet_length(text) <> char_length(text)"
        )
    select = {"token": _TOKEN_SELECT, "date": _DATE_SELECT, "reference": _REFERENCE_SELECT}[kind]
    return f"INSERT INTO {target} ({columns}) " + select.format(source=source, params=params, L=_L)


def insert_index_rows(
    cursor,
    *,
    source: str,
    source_params: dict,
    targets: dict[str, str],
    skip: Iterable[tuple[str, str]] = (),
    only: Sequence[str] | None = None,
) -> None:
    """Extract the built-in parameters' index rows of the resources `source` selects, into `targets`.

    `source` is a FROM item with columns id, resource_type, body (`source_params` fill its placeholders);
    `targets` the table of each kind (the index tables, or a reindex's scratch tables); `skip` the (type,
    param) pairs a custom parameter replaces; `only` limits the rows to these index names. The strings that
    need Python's Unicode normalization are completed here.
    """
    python_only_params()
    # The parameter table makes the planner expect a costly statement: JIT compilation would take ~1 s per
    # statement, far longer than the statement itself. Off for the rest of this transaction.
    cursor.execute("SET LOCAL jit = off")
    arguments = {
        **source_params,
        "skip": [f"{t} {n}" for t, n in skip],
        "only": list(only) if only is not None else None,
        "types": sorted(RESOURCE_TYPES),
    }
    for kind in SQL_KINDS:
        cursor.execute(_statement(kind, source, targets[kind]), arguments)
        if kind == "string":
            _insert_normalized(cursor, targets[kind], cursor.fetchall())


def _insert_normalized(cursor, target: str, found: Sequence[tuple[int, str, str, str]]) -> None:
    """String rows of non-ASCII text, normalized by `normalize_string` (the Python side's rule). A long one may
    equal an ASCII string's row once both are cut to INDEXED_TEXT_LENGTH: rows are a set, it is written once."""
    rows = {
        (pk, resource_type, param, normalize_string(text)[:_L], text[:_L]) for pk, resource_type, param, text in found
    }
    if not rows:
        return
    cursor.execute(
        f"INSERT INTO {target} (resource_id, resource_type, param, normalized, exact)"
        " SELECT * FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::text[], %s::text[]) ON CONFLICT DO NOTHING",
        [list(column) for column in zip(*rows)],
    )
