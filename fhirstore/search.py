"""FHIR search: query strings to filters on the resource table, and the search result cache.

`parse_search` turns `?code=http://loinc.org|8867-4&date=ge2020` into a Django `Q` over `Resource`
(one `id IN (index range scan)` per parameter), so the REST search, conditional references,
conditional creates and the bulk export's `_typeFilter` all match resources the same way.

A REST search runs once: its matching ids, in result order, go into a `SearchCache` row inside the
database (`INSERT … SELECT ARRAY(…)`, no ids travel through Python), and every page is a slice of that
array. Paging links stay stable while resources change, until the row expires.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from urllib.parse import parse_qsl, urlencode

from django.conf import settings
from django.db import connection
from django.db.models import Q, QuerySet
from django.utils import timezone

from fhirstore.custom_params import searchable_param
from fhirstore.exceptions import (
    InvalidRequest,
    PreconditionFailed,
    SearchExpired,
    UnknownResourceType,
    UnsupportedSearch,
)
from fhirstore.fhirdates import parse_date_range
from fhirstore.models import (
    DateIndex,
    NumberIndex,
    QuantityIndex,
    ReferenceIndex,
    Resource,
    SearchCache,
    StringIndex,
    TokenIndex,
)
from fhirstore.resource_types import RESOURCE_TYPES, is_resource_type, is_valid_id
from fhirstore.search_params import INDEXED_TEXT_LENGTH, SearchParam, normalize_string

DATE_PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb")
NUMBER_PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le")  # number and quantity: no sa/eb/ap
IGNORED_PARAMS = frozenset({"_format", "_pretty", "_total"})  # accepted, no effect on the matches
SORTS = {"_lastUpdated": ("last_updated", "id"), "_id": ("logical_id",)}
DEFAULT_SORT = ("id",)  # insertion order: stable, and free with the primary key


@dataclass(frozen=True)
class ParsedSearch:
    """A search for one type: the filter, the order, the page size asked for, the canonical query string."""

    resource_type: str
    filter: Q
    order_by: tuple[str, ...]
    count: int | None
    query: str
    warnings: tuple[str, ...] = ()  # for the Bundle: e.g. a parameter still being indexed


@dataclass(frozen=True)
class SearchPage:
    search_id: uuid.UUID
    resource_type: str
    query: str
    total: int  # ids in the cache
    truncated: bool  # more resources matched than the cache keeps
    offset: int
    count: int
    resources: list[dict]  # current bodies, in result order (resources deleted since the search are skipped)


def parse_search(
    resource_type: str, params: Iterable[tuple[str, str]], *, allow_result_params: bool = True
) -> ParsedSearch:
    """Parse a type's search parameters; InvalidRequest (400) for unknown or malformed ones.

    Parameters repeated are ANDed; comma-separated values of one parameter are ORed. With
    `allow_result_params=False` (`_typeFilter`, conditional references) `_count` and `_sort` are refused.
    """
    if not is_resource_type(resource_type):
        raise UnknownResourceType(f"Unknown resource type {resource_type!r}")
    params = list(params)
    conditions = Q()
    order_by, count, warnings = DEFAULT_SORT, None, []
    for raw_name, value in params:
        name, _, modifier = raw_name.partition(":")
        if name in IGNORED_PARAMS:
            continue
        if name in ("_count", "_sort"):
            if not allow_result_params:
                raise InvalidRequest(f"{name} is not allowed here")
            if name == "_count":
                count = _parse_count(value)
            else:
                order_by = _parse_sort(value)
            continue
        values = [v for v in value.split(",") if v]
        if not values:
            continue  # an empty parameter is ignored, as HAPI does
        conditions &= _param_filter(resource_type, name, modifier or None, values, warnings)
    return ParsedSearch(resource_type, conditions, order_by, count, urlencode(params), tuple(warnings))


def search_filter(resource_type: str, query: str) -> Q:
    """The filter of a query string for one type (`category=laboratory&status=final`), for `_typeFilter`.

    `_count` and `_sort` are refused; use it as `Resource.objects.filter(resource_type=T).filter(q)`.
    """
    return parse_search(resource_type, parse_qsl(query, keep_blank_values=True), allow_result_params=False).filter


def type_filter(expression: str) -> tuple[str, Q]:
    """`(type, filter)` of a `Type?query` expression, such as a `_typeFilter` value or a conditional reference."""
    resource_type, separator, query = expression.partition("?")
    if not separator:
        raise InvalidRequest(f"{expression!r} is not of the form Type?parameters")
    if resource_type not in RESOURCE_TYPES:
        raise InvalidRequest(f"Unknown resource type {resource_type!r} in {expression!r}")
    return resource_type, search_filter(resource_type, query)


def matching_resources(resource_type: str, conditions: Q = Q()) -> QuerySet[Resource]:
    """The current, not deleted resources of a type that match `conditions`."""
    return Resource.objects.filter(resource_type=resource_type, deleted=False).filter(conditions)


def find_logical_ids(expression: str, limit: int = 2) -> list[str]:
    """Up to `limit` ids matching `Type?query` (conditional create, update and references look for one)."""
    resource_type, conditions = type_filter(expression)
    return list(
        matching_resources(resource_type, conditions).order_by("id").values_list("logical_id", flat=True)[:limit]
    )


def resolve_conditional_reference(reference: str) -> str:
    """`Type/id` of the one resource a conditional reference `Type?query` matches; 412 for none or several."""
    matches = find_logical_ids(reference)
    if len(matches) != 1:
        found = "no resource" if not matches else "more than one resource"
        raise PreconditionFailed(f"Conditional reference {reference!r} matches {found}; it must match exactly one")
    return f"{reference.partition('?')[0]}/{matches[0]}"


def run_search(search: ParsedSearch, *, now: datetime | None = None) -> uuid.UUID:
    """Run a search once and keep its matching ids, in order, in the search result cache."""
    limit = settings.FHIR_SEARCH_MAX_RESULTS
    matches = (
        matching_resources(search.resource_type, search.filter)
        .order_by(*search.order_by)
        .values_list("id", flat=True)[: limit + 1]
    )
    sql, params = matches.query.sql_with_params()
    search_id = uuid.uuid4()
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO fhirstore_searchcache (id, resource_type, query, created, total, truncated, resource_ids)"
            " SELECT %s, %s, %s, %s, least(cardinality(m.ids), %s), cardinality(m.ids) > %s, m.ids[1:%s]"
            f" FROM (SELECT ARRAY({sql}) AS ids) m",
            [search_id, search.resource_type, search.query, now or timezone.now(), limit, limit, limit, *params],
        )
    return search_id


def search_page(search_id: uuid.UUID | str, offset: int, count: int, *, now: datetime | None = None) -> SearchPage:
    """One page of a cached search; SearchExpired (410) once the search is gone or too old."""
    try:
        search_id = uuid.UUID(str(search_id))
    except ValueError:
        raise SearchExpired(f"{search_id!r} is not a search id") from None
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT resource_type, query, created, total, truncated, resource_ids[%s:%s]"
            " FROM fhirstore_searchcache WHERE id = %s",
            [offset + 1, offset + count, search_id],
        )
        row = cursor.fetchone()
    max_age = timedelta(minutes=settings.EXPIRE_SEARCH_RESULTS_AFTER_MINUTES)
    if row is None or row[2] < (now or timezone.now()) - max_age:
        raise SearchExpired(f"Search {search_id} has expired or never existed; run the search again")
    resource_type, query, _, total, truncated, page_ids = row
    bodies = dict(Resource.objects.filter(pk__in=page_ids or [], deleted=False).values_list("id", "body"))
    return SearchPage(
        search_id,
        resource_type,
        query,
        total,
        truncated,
        offset,
        count,
        [bodies[pk] for pk in page_ids or [] if pk in bodies],
    )


def delete_expired_searches(*, now: datetime | None = None) -> int:
    """Remove the cached searches older than EXPIRE_SEARCH_RESULTS_AFTER_MINUTES (for the scheduled cleanup job)."""
    cutoff = (now or timezone.now()) - timedelta(minutes=settings.EXPIRE_SEARCH_RESULTS_AFTER_MINUTES)
    deleted, _ = SearchCache.objects.filter(created__lt=cutoff).delete()
    return deleted


def _parse_count(value: str) -> int:
    try:
        count = int(value)
    except ValueError:
        raise InvalidRequest(f"_count must be a whole number, got {value!r}") from None
    if count < 0:
        raise InvalidRequest(f"_count must not be negative, got {count}")
    return min(count, settings.FHIR_MAX_PAGE_SIZE)


def _parse_sort(value: str) -> tuple[str, ...]:
    order: list[str] = []
    for key in value.split(","):
        descending = key.startswith("-")
        columns = SORTS.get(key.lstrip("-"))
        if columns is None:
            raise UnsupportedSearch(f"_sort={key!r} is not supported (supported: {', '.join(SORTS)})")
        order.extend(f"-{column}" if descending else column for column in columns)
    return (*order, "id")


def _param_filter(resource_type: str, name: str, modifier: str | None, values: Sequence[str], warnings: list[str]) -> Q:
    if name == "_id":
        _no_modifier(name, modifier)
        return Q(logical_id__in=values)
    if name == "_lastUpdated":
        _no_modifier(name, modifier)
        return _any(_instant_filter(value) for value in values)
    param = searchable_param(resource_type, name, warnings)
    if param is None:
        if name.startswith("_"):
            raise UnsupportedSearch(f"Search parameter {name!r} is not supported")
        if "." in name:
            raise UnsupportedSearch(f"Chained search parameter {name!r} is not supported")
        raise InvalidRequest(f"Unknown search parameter {name!r} for {resource_type}")
    return Q(pk__in=_INDEX_FILTERS[param.kind](param, modifier, values))


def _token_rows(param: SearchParam, modifier: str | None, values: Sequence[str]) -> QuerySet:
    if modifier in ("below", "above"):
        return _index_rows(TokenIndex, param).filter(_any(_hierarchy_condition(param, modifier, v) for v in values))
    if modifier in ("in", "not-in"):
        return _value_set_rows(param, modifier, values)
    _no_modifier(param.name, modifier)
    conditions = Q()
    for value in values:
        if "|" in value:
            system, _, code = value.partition("|")
            condition = Q(system=system[:INDEXED_TEXT_LENGTH]) if system else Q(system="")
            if code:
                condition &= Q(code=code[:INDEXED_TEXT_LENGTH])
        else:
            condition = Q(code=value[:INDEXED_TEXT_LENGTH])
        conditions |= condition
    return _index_rows(TokenIndex, param).filter(conditions)


def _hierarchy_condition(param: SearchParam, modifier: str, value: str) -> Q:
    """`:below=system|code`: the codes at or below `code` in the current version of the system (`:above`: at
    or above), from the terminology's closure: one index scan joined to the token index, in SQL."""
    from fhirstore.terminology.lookup import codes_above, codes_below

    system, separator, code = value.partition("|")
    if not separator or not system or not code:
        raise InvalidRequest(f"{param.name}:{modifier}={value!r}: give system|code (the code system must be loaded)")
    codes = codes_below(system, code) if modifier == "below" else codes_above(system, code)
    return Q(system=system[:INDEXED_TEXT_LENGTH], code__in=codes)


def _value_set_rows(param: SearchParam, modifier: str, values: Sequence[str]) -> QuerySet:
    """`:in=<ValueSet url>`: the resources with a coding in the ValueSet's expansion (`:not-in`: the resources
    of the type with none), expanded in SQL."""
    from fhirstore.terminology.valuesets import expansion_subquery

    if len(values) != 1:
        raise UnsupportedSearch(f"{param.name}:{modifier} takes one ValueSet url")
    sql, params = expansion_subquery(values[0])
    rows = _index_rows(TokenIndex, param).extra(
        where=[f"(system, code) IN (SELECT system, code FROM ({sql}) vs)"], params=params
    )
    if modifier == "in":
        return rows
    return Resource.objects.filter(resource_type=param.resource_type).exclude(pk__in=rows).values("id")


def _string_rows(param: SearchParam, modifier: str | None, values: Sequence[str]) -> QuerySet:
    if modifier == "exact":
        conditions = _any(Q(exact=value[:INDEXED_TEXT_LENGTH]) for value in values)
    elif modifier == "contains":
        conditions = _any(Q(normalized__contains=normalize_string(value)) for value in values)
    elif modifier is None:
        conditions = _any(Q(normalized__startswith=normalize_string(value)[:INDEXED_TEXT_LENGTH]) for value in values)
    else:
        raise UnsupportedSearch(f"Modifier :{modifier} is not supported on {param.name} (use :exact or :contains)")
    return _index_rows(StringIndex, param).filter(conditions)


def _date_rows(param: SearchParam, modifier: str | None, values: Sequence[str]) -> QuerySet:
    _no_modifier(param.name, modifier)
    conditions = Q()
    for value in values:
        prefix, low, high = _parse_date_value(param.name, value)
        conditions |= {
            "eq": Q(low__gte=low, high__lte=high),
            "ne": ~Q(low__gte=low, high__lte=high),
            "gt": Q(high__gt=high),
            "ge": Q(high__gte=low),
            "lt": Q(low__lt=low),
            "le": Q(low__lte=high),
            "sa": Q(low__gt=high),
            "eb": Q(high__lt=low),
        }[prefix]
    return _index_rows(DateIndex, param).filter(conditions)


def _reference_rows(param: SearchParam, modifier: str | None, values: Sequence[str]) -> QuerySet:
    if modifier is not None and modifier not in RESOURCE_TYPES:
        raise UnsupportedSearch(f"Modifier :{modifier} is not supported on {param.name} (use :Type)")
    conditions = Q()
    for value in values:
        target_type, target_id = _parse_reference_value(param, modifier, value)
        conditions |= Q(target_id=target_id, target_type=target_type) if target_type else Q(target_id=target_id)
    rows = _index_rows(ReferenceIndex, param).filter(conditions)
    return rows.filter(target_type__in=param.targets) if param.stored_as else rows


def _number_rows(param: SearchParam, modifier: str | None, values: Sequence[str]) -> QuerySet:
    _no_modifier(param.name, modifier)
    return _index_rows(NumberIndex, param).filter(_any(_number_condition(param.name, value) for value in values))


def _quantity_rows(param: SearchParam, modifier: str | None, values: Sequence[str]) -> QuerySet:
    """`[prefix]number`, `[prefix]number||code` or `[prefix]number|system|code` (code: the unit's code or text)."""
    _no_modifier(param.name, modifier)
    conditions = Q()
    for value in values:
        parts = value.split("|")
        if len(parts) not in (1, 3):
            raise InvalidRequest(
                f"{param.name}={value!r} is not a quantity ([prefix]number, [prefix]number||code or "
                f"[prefix]number|system|code)"
            )
        condition = _number_condition(param.name, parts[0])
        if len(parts) == 3 and parts[1]:
            condition &= Q(system=parts[1][:INDEXED_TEXT_LENGTH])
        if len(parts) == 3 and parts[2]:
            condition &= Q(code=parts[2][:INDEXED_TEXT_LENGTH])
        conditions |= condition
    return _index_rows(QuantityIndex, param).filter(conditions)


def _number_condition(name: str, value: str) -> Q:
    """The `value` column condition of `[prefix]number`.

    `eq` and `ne` apply FHIR's implicit precision: the search value stands for the interval of half a unit
    of its last digit either side (`100` is [99.5, 100.5), `100.0` is [99.95, 100.05), `1e2` is [50, 150));
    the other prefixes compare with the number as written, as HAPI does.
    """
    prefix = value[:2] if value[:2].isalpha() else "eq"
    text = value[2:] if value[:2].isalpha() else value
    try:
        number = Decimal(text)
    except InvalidOperation:
        number = None
    if prefix not in NUMBER_PREFIXES or number is None or not number.is_finite():
        raise InvalidRequest(f"{name}={value!r} is not a number (optional prefix {'/'.join(NUMBER_PREFIXES)})")
    half_unit = Decimal(5).scaleb(number.as_tuple().exponent - 1)
    within = Q(value__gte=float(number - half_unit), value__lt=float(number + half_unit))
    return {
        "eq": within,
        "ne": ~within,
        "gt": Q(value__gt=float(number)),
        "lt": Q(value__lt=float(number)),
        "ge": Q(value__gte=float(number)),
        "le": Q(value__lte=float(number)),
    }[prefix]


def _parse_reference_value(param: SearchParam, modifier: str | None, value: str) -> tuple[str | None, str]:
    if modifier is not None:
        target_type, target_id = modifier, value
    elif "/" in value:
        target_type, target_id = value.rstrip("/").split("/")[-2:]  # Type/id, or an absolute URL ending so
    else:
        target_type, target_id = (param.targets[0] if len(param.targets) == 1 else None), value
    if (target_type is not None and target_type not in RESOURCE_TYPES) or not is_valid_id(target_id):
        raise InvalidRequest(f"{param.name}={value!r} is not a reference (Type/id or id)")
    return target_type, target_id


def _index_rows(model, param: SearchParam) -> QuerySet:
    return model.objects.filter(resource_type=param.resource_type, param=param.index_name).values("resource_id")


def _parse_date_value(name: str, value: str) -> tuple[str, datetime, datetime]:
    prefix = value[:2] if value[:2] in DATE_PREFIXES else "eq"
    covered = parse_date_range(value[2:] if value[:2] in DATE_PREFIXES else value)
    if covered is None:
        raise InvalidRequest(f"{name}={value!r} is not a date (optional prefix {'/'.join(DATE_PREFIXES)})")
    return prefix, *covered


def _instant_filter(value: str) -> Q:
    prefix, low, high = _parse_date_value("_lastUpdated", value)
    return {
        "eq": Q(last_updated__range=(low, high)),
        "ne": ~Q(last_updated__range=(low, high)),
        "gt": Q(last_updated__gt=high),
        "sa": Q(last_updated__gt=high),
        "ge": Q(last_updated__gte=low),
        "lt": Q(last_updated__lt=low),
        "eb": Q(last_updated__lt=low),
        "le": Q(last_updated__lte=high),
    }[prefix]


def _no_modifier(name: str, modifier: str | None) -> None:
    if modifier is not None:
        raise UnsupportedSearch(f"Modifier :{modifier} is not supported on {name}")


def _any(conditions: Iterable[Q]) -> Q:
    combined = Q()
    for condition in conditions:
        combined |= condition
    return combined


_INDEX_FILTERS = {
    "token": _token_rows,
    "string": _string_rows,
    "date": _date_rows,
    "reference": _reference_rows,
    "number": _number_rows,
    "quantity": _quantity_rows,
}
