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

import hashlib
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from fhirstore.resource_types import RESOURCE_TYPES
from fhirstore.search_params import INDEXED_TEXT_LENGTH, REGISTRY, STRING_PARTS, SearchParam, normalize_string

logger = logging.getLogger(__name__)

SQL_KINDS = ("token", "string", "date", "reference")  # the kinds with a rule in SQL here
TABLE_OF_KIND = {
    "token": "fhirstore_tokenindex",
    "string": "fhirstore_stringindex",
    "date": "fhirstore_dateindex",
    "reference": "fhirstore_referenceindex",
}


@dataclass(frozen=True)
class CompiledParam:
    resource_type: str
    name: str  # the `param` column of its rows
    kind: str
    paths: tuple[str, ...]  # dotted, as in `search_params`
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
            p.paths,
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


_L = INDEXED_TEXT_LENGTH
_KIND_CODE = {kind: number for number, kind in enumerate(SQL_KINDS, 1)}


def _value(path: str) -> str:
    """The JSON value(s) at `path` in `r.body`, as one jsonb: the element itself for a one-step path (a list is
    walked by the next step), the array of what a lax SQL/JSON path finds for a longer one (only when its
    first element is there: `?` is cheap, starting a path query is not)."""
    first, *rest = path.split(".")
    if not rest:
        return f"r.body->{_literal(first)}"
    return f"CASE WHEN r.body ? {_literal(first)} THEN jsonb_path_query_array(r.body, {_literal(json_path(path))}) END"


def _params_of(resource_type: str, skip: frozenset, only: frozenset | None) -> list[CompiledParam]:
    return [
        p
        for p in compiled_params()
        if p.resource_type == resource_type and (resource_type, p.name) not in skip and (only is None or p.name in only)
    ]


def _by_type(resource_types: Sequence[str], skip: frozenset, only: frozenset | None, column: Callable) -> str:
    """`CASE r.resource_type WHEN … THEN ARRAY[…] END`: one array per type, of `column(param, path)`."""
    branches = []
    for resource_type in resource_types:
        items = [column(p, path) for p in _params_of(resource_type, skip, only) for path in p.paths]
        if items:
            branches.append(f"WHEN {_literal(resource_type)} THEN ARRAY[{', '.join(items)}]")
    return f"CASE r.resource_type {' '.join(branches)} END" if branches else "NULL::text[]"


# Every value the parameters' paths find in each body, one row per value and parameter (a list found is walked:
# one row per element), tagged with the kind (1 token, 2 string, 3 date, 4 reference). Set-returning functions in
# the select list, evaluated value per call (in FROM each call's set is materialized first: ~2x the cost), and the
# paths written per type (no join with a table of parameters, no path query for a one-step path).
_VALUES = (
    "SELECT id, resource_type, kind, param, jsonb_array_elements(CASE jsonb_typeof(v) WHEN 'array' THEN v"
    " ELSE jsonb_build_array(v) END) AS item FROM (SELECT r.id, r.resource_type, unnest({kinds}) AS kind,"
    " unnest({names}) AS param, unnest({values}) AS v FROM {source} r) found WHERE v IS NOT NULL"
)

# `search_params._tokens`: a CodeableConcept's codings, else the value itself; then a boolean, a string, a
# Coding's code, an Identifier's value. `str(value.get("system", ""))` for the system.
_TOKENS = (
    "SELECT DISTINCT id, resource_type, param, left(system, {L}) AS system, left(code, {L}) AS code FROM ("
    " SELECT id, resource_type, param,"
    "  CASE jsonb_typeof(c->'system') WHEN 'string' THEN c->>'system' WHEN 'null' THEN 'None'"
    "   WHEN 'boolean' THEN initcap(c->>'system') WHEN 'number' THEN c->>'system' ELSE '' END AS system,"
    "  CASE jsonb_typeof(c) WHEN 'boolean' THEN c::text WHEN 'string' THEN c #>> '{{}}'"
    "   WHEN 'object' THEN CASE WHEN jsonb_typeof(c->'coding') = 'array' THEN NULL"
    "    WHEN jsonb_typeof(c->'code') = 'string' THEN c->>'code'"
    "    WHEN jsonb_typeof(c->'value') = 'string' THEN c->>'value' END END AS code"
    " FROM (SELECT id, resource_type, param, jsonb_array_elements(CASE WHEN jsonb_typeof(item->'coding') = 'array'"
    "  THEN item->'coding' ELSE jsonb_build_array(item) END) AS c FROM found_values WHERE kind = 1) codings"
    ") tokens WHERE code <> ''"
)

# `search_params._strings`: a string, or the string parts (one level of list) of a HumanName or Address: the
# parts gathered in one array (an absent one is a JSON null), walked two levels deep by one lax path.
_STRINGS = (
    "SELECT DISTINCT id, resource_type, param, x #>> '{{}}' AS text FROM ("
    " SELECT id, resource_type, param, jsonb_path_query(CASE jsonb_typeof(item) WHEN 'string' THEN"
    "  jsonb_build_array(item) WHEN 'object' THEN jsonb_build_array("
    + ", ".join(f"item->{_literal(part)}" for part in STRING_PARTS)
    + ") END, 'lax $[*][*]') AS x FROM found_values WHERE kind = 2) parts"
    " WHERE jsonb_typeof(x) = 'string' AND x <> '\"\"'"
)

# The two shapes most dates have, a dateTime to the second with a zone (`2020-03-01T10:00:05-05:00`, `…Z`) and a
# date (`2020-03-01`), with every part in range (years 1000-9998 and zones up to ±14:59, so no bound leaves the years
# PostgreSQL and Python share): 1 and 2, read by PostgreSQL's own timestamp input where they are found; 0 for every
# other text, which `fhir_date_range` reads as `fhirdates` does (~5x the cost), once per distinct text of the batch.
# The shape by a regular expression without bounded repeats (`translate` costs ~40 ns per character and character
# of its set).
_DIGITS = "[0-9][0-9]"
_COMMON_SHAPE = (
    f"CASE WHEN ({{t}} ~ '^{_DIGITS}{_DIGITS}-{_DIGITS}-{_DIGITS}T{_DIGITS}:{_DIGITS}:{_DIGITS}([+-]{_DIGITS}:{_DIGITS}|Z)$'"
    "  AND (length({t}) = 20 OR (substr({t}, 21, 2) <= '14' AND substr({t}, 24, 2) < '60'))"
    "  AND substr({t}, 12, 2) < '24' AND substr({t}, 15, 2) < '60' AND substr({t}, 18, 2) < '60'"
    f"  OR {{t}} ~ '^{_DIGITS}{_DIGITS}-{_DIGITS}-{_DIGITS}$')"
    "  AND substr({t}, 1, 4) BETWEEN '1000' AND '9998' AND substr({t}, 6, 2) BETWEEN '01' AND '12'"
    "  AND substr({t}, 9, 2) >= '01' AND substr({t}, 9, 2)::int <= CASE substr({t}, 6, 2)"
    "   WHEN '02' THEN CASE WHEN mod(substr({t}, 1, 4)::int, 4) = 0 AND (mod(substr({t}, 1, 4)::int, 100) <> 0"
    "    OR mod(substr({t}, 1, 4)::int, 400) = 0) THEN 29 ELSE 28 END"
    "   WHEN '04' THEN 30 WHEN '06' THEN 30 WHEN '09' THEN 30 WHEN '11' THEN 30 ELSE 31 END"
    " THEN CASE WHEN length({t}) = 10 THEN 2 ELSE 1 END ELSE 0 END"
)


def _bound(text: str, bound: int) -> str:
    """The low (0) or high (1) instant of the date `text` (a column of `date_values`, with its shape)."""
    common = {
        0: ("{t}::timestamptz", "({t} || 'T00:00:00Z')::timestamptz"),
        1: (
            "{t}::timestamptz + interval '1 second' - interval '1 microsecond'",
            "({t} || 'T23:59:59.999999Z')::timestamptz",
        ),
    }[bound]
    return (
        f"CASE d.{text}_shape WHEN 1 THEN {common[0]} WHEN 2 THEN {common[1]}"
        f" ELSE (p.ranges->{{t}}->>{bound})::timestamptz END"
    ).format(t=f"d.{text}")


# `search_params._date_range`: a date/dateTime/instant, or a Period (an absent or unreadable end is open). The
# texts of other shapes are looked up in one JSON object (a binary search), not joined: the planner, blind to how
# many values a batch holds, joined a Period's start and end by nested loops, every value against every text.
_DATES = (
    "WITH date_values AS MATERIALIZED (SELECT *, "
    + ", ".join(
        f"{_COMMON_SHAPE.format(t=column)} AS {column}_shape" for column in ("single", "start_text", "end_text")
    )
    + " FROM (SELECT id, resource_type, param,"
    "  CASE WHEN jsonb_typeof(item) = 'string' THEN item #>> '{}' END AS single,"
    "  jsonb_typeof(item) = 'object' AND (item ? 'start' OR item ? 'end') AS period,"
    "  CASE WHEN jsonb_typeof(item->'start') = 'string' THEN item->>'start' END AS start_text,"
    "  CASE WHEN jsonb_typeof(item->'end') = 'string' THEN item->>'end' END AS end_text"
    "  FROM found_values WHERE kind = 3) AS texts),"
    " parsed AS (SELECT coalesce(jsonb_object_agg(t, jsonb_build_array(f.low, f.high)), '{}') AS ranges"
    "  FROM (SELECT single FROM date_values WHERE single_shape = 0 UNION SELECT start_text FROM date_values"
    "  WHERE start_text_shape = 0 UNION SELECT end_text FROM date_values WHERE end_text_shape = 0) AS distinct_texts(t),"
    "  fhir_date_range(t) AS f WHERE t IS NOT NULL)"
    " SELECT DISTINCT id, resource_type, param, low, high FROM (SELECT d.id, d.resource_type, d.param,"
    f"  CASE WHEN d.period THEN coalesce({_bound('start_text', 0)}, '0001-01-01 00:00:00+00')"
    f"   ELSE {_bound('single', 0)} END AS low,"
    f"  CASE WHEN d.period THEN coalesce({_bound('end_text', 1)}, '9999-12-31 23:59:59.999999+00')"
    f"   ELSE {_bound('single', 1)} END AS high"
    "  FROM date_values d, parsed p WHERE d.single IS NOT NULL OR d.period) AS ranged WHERE low IS NOT NULL"
)

# `search_params._add_reference`: a relative literal reference `Type/id[/_history/v]` to a known type. Split by
# position, not by `regexp_match` (a regular expression with captures costs ~50x one without in PostgreSQL), and
# the id checked as `resource_types.ID_PATTERN` (1-64 of [A-Za-z0-9.-], and Python's `$` admits one final
# newline) by a negated character class (~0.5 µs an id; a bounded repeat `{1,64}` costs ~10x, `translate` with
# the 64 allowed characters ~100x).
_REFERENCES = (
    "SELECT DISTINCT id, resource_type, param, target_type, target_id FROM (SELECT id, resource_type, param,"
    " split_part(ref, '/', 1) AS target_type, split_part(ref, '/', 2) AS target_id, CASE WHEN right(split_part(ref,"
    " '/', 2), 1) = E'\\n' THEN left(split_part(ref, '/', 2), -1) ELSE split_part(ref, '/', 2) END AS bare_id"
    " FROM (SELECT id, resource_type, param, item->>'reference' AS ref FROM found_values WHERE kind = 4"
    "  AND jsonb_typeof(item->'reference') = 'string') refs"
    " WHERE length(ref) - length(replace(ref, '/', '')) = 1"
    "  OR (length(ref) - length(replace(ref, '/', '')) = 3 AND split_part(ref, '/', 3) = '_history')) parts"
    " WHERE target_type = ANY(%(types)s) AND length(bare_id) BETWEEN 1 AND 64"
    " AND bare_id !~ '[^A-Za-z0-9.-]'"
    "{targets}"
)

COLUMNS = {
    "token": ("param", "system", "code"),
    "string": ("param", "normalized", "exact"),
    "date": ("param", "low", "high"),
    "reference": ("param", "target_type", "target_id"),
}


def _target_condition(resource_types: Sequence[str], skip: frozenset, only: frozenset | None) -> str:
    """References of a parameter with targets only to those types."""
    limited = [
        f"(resource_type = {_literal(p.resource_type)} AND param = {_literal(p.name)}"
        f" AND target_type <> ALL(ARRAY[{', '.join(map(_literal, p.targets))}]))"
        for resource_type in resource_types
        for p in _params_of(resource_type, skip, only)
        if p.kind == "reference" and p.targets
    ]
    return f" AND NOT ({' OR '.join(limited)})" if limited else ""


@lru_cache(maxsize=256)
def _statement(
    source: str,
    targets: tuple[tuple[str, str], ...],
    resource_types: tuple[str, ...],
    skip: frozenset,
    only: frozenset | None,
    deduplicate: bool = True,
) -> str:
    """One statement for a batch: the values found once, each kind's rows inserted into its target (data-modifying
    CTEs), and the non-ASCII strings returned for Python to normalize. Without `deduplicate` a row found twice
    is written twice (a third of the token rows' cost is their sort)."""
    kinds = _by_type(resource_types, skip, only, lambda p, path: str(_KIND_CODE[p.kind]))
    names = _by_type(resource_types, skip, only, lambda p, path: _literal(p.name))
    values = _by_type(resource_types, skip, only, lambda p, path: _value(path))
    if kinds == "NULL::text[]":
        kinds, names, values = "NULL::int[]", "NULL::text[]", "NULL::jsonb[]"
    found = _VALUES.format(kinds=kinds, names=names, values=values, source=source)
    selects = {
        "token": _TOKENS.format(L=_L),
        "date": _DATES,
        "reference": _REFERENCES.format(targets=_target_condition(resource_types, skip, only).replace("%", "%%")),
    }
    if not deduplicate:
        selects = {kind: select.replace("SELECT DISTINCT", "SELECT", 1) for kind, select in selects.items()}
    distinct = "DISTINCT " if deduplicate else ""
    target = dict(targets)
    inserts = [
        f"{kind}_rows AS (INSERT INTO {target[kind]} (resource_id, resource_type, {', '.join(COLUMNS[kind])}) {select})"
        for kind, select in selects.items()
    ]
    return (
        f"WITH found_values AS MATERIALIZED ({found}), strings AS MATERIALIZED"
        f" ({_STRINGS.format(L=_L).replace('SELECT DISTINCT', 'SELECT ' + distinct, 1)}), "
        + ", ".join(inserts)
        + f", string_rows AS (INSERT INTO {target['string']} (resource_id, resource_type, param, normalized, exact)"
        f' SELECT {distinct}id, resource_type, param, left(lower(text COLLATE "C"), {_L}), left(text, {_L}) FROM strings'
        " WHERE octet_length(text) = char_length(text))"
        " SELECT id, resource_type, param, text FROM strings WHERE octet_length(text) <> char_length(text)"
    )


def insert_index_rows(
    cursor,
    *,
    source: str,
    source_params: dict,
    targets: dict[str, str],
    skip: Iterable[tuple[str, str]] = (),
    only: Sequence[str] | None = None,
    resource_types: Iterable[str] | None = None,
    deduplicate: bool = True,
) -> None:
    """Extract the built-in parameters' index rows of the resources `source` selects, into `targets`.

    `source` is a query with columns id, resource_type, body (`source_params` fill its placeholders);
    `targets` the table of each kind (the index tables, or a reindex's scratch tables); `skip` the (type,
    param) pairs a custom parameter replaces; `only` limits the rows to these index names; `resource_types` the
    types the source holds (fewer types, a shorter statement; default: every type); `deduplicate=False` for
    targets without a key, where a row found twice may be written twice (a reindex's scratch tables, compared by
    joins). The strings that need Python's Unicode normalization are completed here.
    """
    python_only_params()
    # A long statement makes the planner expect a costly one: JIT compilation would take ~1 s per statement,
    # far longer than the statement itself. Off for the rest of this transaction.
    cursor.execute("SET LOCAL jit = off")
    statement = _statement(
        source,
        tuple(sorted(targets.items())),
        tuple(sorted(resource_types if resource_types is not None else REGISTRY)),
        frozenset(skip),
        frozenset(only) if only is not None else None,
        deduplicate,
    )
    if source_params:
        cursor.execute(statement, {**source_params, "types": sorted(RESOURCE_TYPES)})
    else:
        _execute_prepared(cursor, statement.replace("%(types)s", _TYPES))
    _insert_normalized(cursor, targets["string"], cursor.fetchall())


_TYPES = "ARRAY[" + ", ".join(map(_literal, sorted(RESOURCE_TYPES))) + "]::text[]"


def _execute_prepared(cursor, statement: str) -> None:
    """Run a statement without parameters as a prepared statement of this session: planning one of these takes
    10-20 ms (a page of a reindex, ~15 % of its time), and its plan does not depend on the page."""
    name = "index_rows_" + hashlib.sha1(statement.encode()).hexdigest()[:20]
    cursor.execute("SELECT FROM pg_prepared_statements WHERE name = %s", [name])
    if cursor.fetchone() is None:
        cursor.execute(f"PREPARE {name} AS {statement}")
    cursor.execute(f"EXECUTE {name}")


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
