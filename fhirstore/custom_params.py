"""SearchParameter resources as index definitions: what the store indexes beyond `search_params`' table.

An active SearchParameter resource (R4) becomes one `CustomSearchParameter` row per base type, in the
transaction that writes it. Its FHIRPath `expression` is evaluated with `fhirpathpy` on every write of a
resource of that type from then on, and the rows it finds go into the index table of its `type`: token,
string, date, reference, number and quantity (the store's index tables; uri, composite and special
parameters are refused). A parameter with the code and base of a built-in one replaces it, as in HAPI.

A new or changed parameter is not trusted for search until the reindex job started with it (the
`search_parameters_changed` signal; the `fhirjobs.reindex` app answers it) has applied it to the resources
stored before: `searchable_param` refuses it until then.

No write may miss a parameter change, or its resources would lack index rows once the reindex has passed
them by. Every write transaction takes a shared advisory lock before it reads the parameters; a change of
parameters takes the same lock exclusively. So a write either commits before the change does (and the
reindex job, which starts after that commit, reindexes it) or reads the changed parameters.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import connection
from django.dispatch import Signal

from fhirstore.exceptions import InvalidRequest, InvalidResource
from fhirstore.fhirpath import ExpressionTooCostly, compile_bounded, worst_case_sample
from fhirstore.models import CustomSearchParameter
from fhirstore.resource_types import RESOURCE_TYPES
from fhirstore.search_params import INDEX_KINDS, IndexRows, SearchParam, add_index_values, extractor_for, params_for

logger = logging.getLogger(__name__)

SUPPORTED_KINDS = ("token", "string", "date", "reference", "number", "quantity")
INDEXED_STATUS = "active"  # draft and retired SearchParameters are stored but not indexed, as in HAPI
CODE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9\-_.]{0,63}$")
# pg_advisory_xact_lock key of "the set of search parameters": shared by writes, exclusive for a change.
PARAMETERS_LOCK = 7_264_918_311

# Sent in the transaction that changed custom parameters, with `search_parameter` (the resource's pk),
# `resource_types` and `codes` (what needs reindexing). The receiver starts the reindex and records its job
# id on the rows (`CustomSearchParameter.reindex_job_id`); the rows become ready when that job completes.
search_parameters_changed = Signal()


class ParameterNotReady(InvalidRequest):
    """This search parameter is being indexed; it can be searched once its reindex job has completed."""

    issue_code = "not-supported"


@dataclass(frozen=True)
class CustomParam:
    param: SearchParam  # `name` is the code; no paths: `expression` says what it indexes
    expression: str | None  # None: a deleted override, the built-in parameter is back
    ready: bool
    reindex_job_id: UUID | None


@dataclass
class Registry:
    """The custom parameters as of `key` (a fingerprint of the table), with their compiled expressions."""

    key: tuple
    by_type: dict[str, dict[str, CustomParam]]
    _compiled: dict[tuple[str, str], Callable[[dict], list]] = field(default_factory=dict)

    def extract(self, resource: dict, only: frozenset[str] | None = None) -> IndexRows:
        """The index rows of a resource: the built-in table's, with custom parameters replacing or adding; of the
        parameters named in `only` alone, if given (the others are not evaluated)."""
        resource_type = resource["resourceType"]
        rows = extractor_for(resource_type, only)(resource)
        custom = self._indexed(resource_type, only)
        if not custom:
            return rows
        rows = without_params(rows, {c.param.name for c in custom})
        self._add_custom_rows(rows, resource, custom)
        return rows

    def extract_custom(self, resource: dict, only: frozenset[str] | None = None) -> IndexRows:
        """The index rows of a resource's custom parameters only (the built-in ones are extracted in SQL); of those
        named in `only` alone, if given."""
        rows = IndexRows()
        self._add_custom_rows(rows, resource, self._indexed(resource["resourceType"], only))
        return rows

    def replacing(self, resource_type: str) -> set[str]:
        """The codes of the custom parameters of a type that are indexed (a built-in one of that code is not)."""
        return {c.param.name for c in self._indexed(resource_type)}

    def _indexed(self, resource_type: str, only: frozenset[str] | None = None) -> list[CustomParam]:
        return [
            c
            for c in self.by_type.get(resource_type, {}).values()
            if c.expression is not None and (only is None or c.param.name in only)
        ]

    def _add_custom_rows(self, rows: IndexRows, resource: dict, custom: Iterable[CustomParam]) -> None:
        resource_type = resource["resourceType"]
        for parameter in custom:
            try:
                values = self._evaluator(parameter)(resource)
            except Exception as error:  # a SearchParameter's bad luck with one resource must not fail the write
                logger.warning(
                    "SearchParameter %s.%s failed on %s/%s: %s",
                    resource_type,
                    parameter.param.name,
                    resource_type,
                    resource.get("id"),
                    error,
                )
                continue
            add_index_values(rows, parameter.param, values)

    def _evaluator(self, parameter: CustomParam) -> Callable[[dict], list]:
        key = (parameter.param.resource_type, parameter.param.name)
        if key not in self._compiled:
            self._compiled[key] = compile_expression(parameter.expression)
        return self._compiled[key]


_registry: Registry | None = None


def compile_expression(expression: str) -> Callable[[dict], list]:
    """A FHIRPath expression as a function of a resource, bounded in time and values (`fhirpath`)."""
    return compile_bounded(expression)


def current_registry() -> Registry:
    """The custom parameters now: one cheap query, a reload only when the table changed."""
    global _registry
    with connection.cursor() as cursor:
        cursor.execute("SELECT max(id), count(*), count(*) FILTER (WHERE ready) FROM fhirstore_customsearchparameter")
        key = tuple(cursor.fetchone())
    registry = _registry
    if registry is None or registry.key != key:
        by_type: dict[str, dict[str, CustomParam]] = {}
        for row in CustomSearchParameter.objects.all():
            param = SearchParam(row.resource_type, row.code, row.kind, targets=tuple(row.targets))
            by_type.setdefault(row.resource_type, {})[row.code] = CustomParam(
                param, row.expression, row.ready, row.reindex_job_id
            )
        registry = _registry = Registry(key, by_type)
    return registry


def index_extractor(*, exclusive: bool = False) -> Callable[[dict], IndexRows]:
    """The extraction function for a write transaction, after taking the parameters lock (see the docstring).

    `exclusive` for a transaction that changes SearchParameters: take it before any other lock.
    """
    return index_registry(exclusive=exclusive).extract


def index_registry(*, exclusive: bool = False) -> Registry:
    """The custom parameters for a write transaction, after taking the parameters lock (as `index_extractor`)."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT pg_advisory_xact_lock{'' if exclusive else '_shared'}(%s)", [PARAMETERS_LOCK])
    return current_registry()


def without_params(rows: IndexRows, exclude: Iterable[str]) -> IndexRows:
    """The rows of all parameters but `exclude` (by index name)."""
    exclude = set(exclude)
    return IndexRows(*({row for row in getattr(rows, kind) if row[0] not in exclude} for kind in INDEX_KINDS))


def searchable_param(resource_type: str, name: str, warnings: list[str]) -> SearchParam | None:
    """The parameter a search by `name` uses (a custom one replaces a built-in).

    While a new, changed or deleted-override parameter is being reindexed: ParameterNotReady, or with
    FHIR_SEARCH_WHILE_INDEXING=warn the parameter as far as it is indexed, and a warning added to `warnings`.
    """
    custom = current_registry().by_type.get(resource_type, {}).get(name)
    if custom is None:
        return params_for(resource_type).get(name)
    if not custom.ready:
        job = f" (reindex job {custom.reindex_job_id})" if custom.reindex_job_id else ""
        message = f"Search parameter {name!r} of {resource_type} is being indexed{job}"
        if settings.FHIR_SEARCH_WHILE_INDEXING != "warn":
            raise ParameterNotReady(f"{message}; search with it once the reindex has completed")
        warnings.append(f"{message}: these results may be incomplete until the reindex has completed")
    return custom.param if custom.expression is not None else params_for(resource_type).get(name)


def custom_codes(resource_type: str) -> list[str]:
    """The codes of the custom parameters of a type (for a reindex that rebuilds them)."""
    return sorted(current_registry().by_type.get(resource_type, {}))


@dataclass(frozen=True)
class SearchableParameter:
    """A custom parameter that searches may use: for the CapabilityStatement."""

    resource_type: str
    code: str
    kind: str
    url: str | None  # the SearchParameter's canonical url
    description: str | None


def searchable_custom_parameters() -> list[SearchableParameter]:
    """The custom parameters whose reindex completed, by type and code (one query, bodies not loaded)."""
    rows = (
        CustomSearchParameter.objects.filter(ready=True, expression__isnull=False)
        .order_by("resource_type", "code")
        .values_list(
            "resource_type", "code", "kind", "search_parameter__body__url", "search_parameter__body__description"
        )
    )
    return [
        SearchableParameter(
            t, code, kind, url if isinstance(url, str) else None, description if isinstance(description, str) else None
        )
        for t, code, kind, url, description in rows
    ]


def codes_being_indexed() -> set[tuple[str, str]]:
    """(type, code) of the custom rows not ready yet: searches refuse them, built-in or not."""
    return set(CustomSearchParameter.objects.filter(ready=False).values_list("resource_type", "code"))


@dataclass(frozen=True)
class Definition:
    resource_type: str
    code: str
    kind: str
    expression: str
    targets: tuple[str, ...]


def definitions_of(resource: Mapping[str, Any]) -> list[Definition]:
    """What an active SearchParameter indexes, one per base; [] for a draft or retired one.

    InvalidResource (422) naming every problem when it cannot be indexed.
    """
    if resource.get("status") != INDEXED_STATUS:
        return []
    problems = []
    code, kind, expression = resource.get("code"), resource.get("type"), resource.get("expression")
    bases = resource.get("base")
    if not isinstance(code, str) or not CODE_PATTERN.match(code):
        problems.append(f"code {code!r} must be a search parameter name (letters, digits, - _ .; not starting _)")
    if not isinstance(bases, list) or not bases or not all(isinstance(b, str) for b in bases):
        problems.append("base must list at least one resource type")
        bases = []
    unknown = [base for base in bases if base not in RESOURCE_TYPES]
    if unknown:
        problems.append(f"base {', '.join(map(repr, unknown))} is not a resource type")
    if kind not in SUPPORTED_KINDS:
        problems.append(f"type {kind!r} is not supported; the store indexes {', '.join(SUPPORTED_KINDS)}")
    targets = resource.get("target") or []
    if not isinstance(targets, list) or any(target not in RESOURCE_TYPES for target in targets):
        problems.append(f"target {targets!r} must list resource types")
    if not isinstance(expression, str) or not expression.strip():
        problems.append("expression (FHIRPath) is required")
    elif not unknown:
        problems += _expression_problems(expression, bases)
    if problems:
        raise InvalidResource(f"SearchParameter cannot be indexed: {problems[0]}", problems=problems)
    return [
        Definition(base, code, kind, expression, tuple(targets) if kind == "reference" else ())
        for base in dict.fromkeys(bases)
    ]


def _expression_problems(expression: str, bases: Sequence[str]) -> list[str]:
    """Compiled, and evaluated on an empty resource and on a worst-case sample of each base: an expression that
    is too costly there would be on real data (every write of the type runs it)."""
    try:
        evaluate = compile_expression(expression)
        for base in bases:
            evaluate({"resourceType": base, "id": "x"})
    except Exception as error:
        return [f"expression {expression!r} is not valid FHIRPath: {error or type(error).__name__}"]
    for base in bases:
        try:
            evaluate(worst_case_sample(base))
        except ExpressionTooCostly as error:
            return [
                f"expression {expression!r} is too costly on a sample {base} ({error}); every write of a "
                f"{base} would run it"
            ]
        except Exception:  # noqa: BLE001 - the sample's made-up values may not suit the expression's functions
            continue
    return []


def sync_search_parameters(written: Sequence[tuple[int, dict | None]]) -> None:
    """Bring the custom parameters in step with SearchParameter resources written (body) or deleted (None)
    in this transaction, which holds the parameters lock exclusively (`index_extractor(exclusive=True)`).

    A change that alters what is indexed (code, base, type, expression, target, status) marks the parameter
    not ready and announces it with `search_parameters_changed`; a change of the description does nothing.
    """
    for pk, body in written:
        new = definitions_of(body) if body is not None else []
        old = list(CustomSearchParameter.objects.filter(search_parameter_id=pk))
        defined = {
            (r.resource_type, r.code): (r.kind, r.expression, tuple(r.targets)) for r in old if r.expression is not None
        }
        if defined == {(d.resource_type, d.code): (d.kind, d.expression, d.targets) for d in new}:
            continue
        CustomSearchParameter.objects.filter(search_parameter_id=pk).delete()
        rows = [
            CustomSearchParameter(
                search_parameter_id=pk,
                resource_type=d.resource_type,
                code=d.code,
                kind=d.kind,
                expression=d.expression,
                targets=list(d.targets),
            )
            for d in new
        ]
        new_keys = {(d.resource_type, d.code) for d in new}
        rows += [
            CustomSearchParameter(search_parameter_id=pk, resource_type=t, code=c, kind="", expression=None)
            for t, c in defined
            if (t, c) not in new_keys and c in params_for(t)
        ]  # built-ins come back
        for row in rows:
            taken = CustomSearchParameter.objects.filter(resource_type=row.resource_type, code=row.code).first()
            if taken is not None and taken.expression is not None:
                raise InvalidResource(
                    f"Search parameter {row.code!r} of {row.resource_type} is defined already, "
                    f"by another SearchParameter; change or delete that one"
                )
            if taken is not None:
                taken.delete()  # a deleted override being reindexed: this definition replaces it
        CustomSearchParameter.objects.bulk_create(rows)
        search_parameters_changed.send(
            sender=CustomSearchParameter,
            search_parameter=pk,
            resource_types=sorted({t for t, _ in defined} | {d.resource_type for d in new}),
            codes=sorted({c for _, c in defined} | {d.code for d in new}),
        )


def reindex_completed(job_id: UUID) -> None:
    """The parameters this reindex job applied can be searched; deleted overrides are gone."""
    CustomSearchParameter.objects.filter(reindex_job_id=job_id, expression__isnull=False).update(ready=True)
    CustomSearchParameter.objects.filter(reindex_job_id=job_id, expression__isnull=True).delete()
