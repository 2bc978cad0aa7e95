"""`$reindex` requests ⇄ REINDEX job parameters, and the `$reindex-dryrun` answer as a Parameters resource."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fhirjobs.reindex.exceptions import InvalidReindexRequest
from fhirstore.exceptions import InvalidRequest
from fhirstore.fhirdates import format_instant
from fhirstore.search_params import IndexRows


@dataclass(frozen=True)
class ReindexRequest:
    urls: tuple[str, ...] = ()  # `Type?search`; none: everything
    batch_size: int | None = None  # None: the job's default
    search_parameters: tuple[str, ...] = ()  # codes; none: all

    def job_parameters(self) -> dict[str, Any]:
        parameters: dict[str, Any] = {"urls": list(self.urls), "search_parameters": list(self.search_parameters)}
        if self.batch_size is not None:
            parameters["batch_size"] = self.batch_size
        return parameters


@dataclass
class _Collected:
    urls: list[str] = field(default_factory=list)
    batch_size: list[int] = field(default_factory=list)
    search_parameters: list[str] = field(default_factory=list)


def parse_reindex_parameters(body: object, resource_type: str | None = None) -> ReindexRequest:
    """A `$reindex` Parameters body (url*, batchSize?, searchParameter*) as a request; at type level the
    urls default to `Type?` and must be of that type. InvalidReindexRequest lists every problem."""
    if body is None:
        body = {"resourceType": "Parameters"}
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise InvalidRequest("$reindex takes a Parameters resource")
    collected, problems = _Collected(), []
    for parameter in body.get("parameter") or []:
        name = parameter.get("name") if isinstance(parameter, dict) else None
        value = _value(parameter) if isinstance(parameter, dict) else None
        if name == "url" and isinstance(value, str):
            collected.urls.append(value if "?" in value else f"{value}?")
        elif name == "batchSize" and isinstance(value, int) and not isinstance(value, bool):
            collected.batch_size.append(value)
        elif name == "searchParameter" and isinstance(value, str):
            collected.search_parameters.append(value)
        else:
            problems.append(f"parameter {name!r} is not understood (url, batchSize, searchParameter) or has no value")
    if len(collected.batch_size) > 1:
        problems.append("batchSize may be given once")
    if resource_type is not None:
        collected.urls = collected.urls or [f"{resource_type}?"]
        problems += [
            f"url {url!r} is not of type {resource_type}"
            for url in collected.urls
            if url.partition("?")[0] != resource_type
        ]
    if problems:
        raise InvalidReindexRequest(problems)
    return ReindexRequest(
        tuple(collected.urls),
        collected.batch_size[0] if collected.batch_size else None,
        tuple(collected.search_parameters),
    )


def _value(parameter: dict) -> object:
    return next((value for key, value in parameter.items() if key.startswith("value")), None)


def dry_run_parameters(rows: IndexRows) -> dict:
    """Index rows as a Parameters resource: one parameter per row, grouped by table, as HAPI's dry run."""

    def part(name: str, value: object) -> dict:
        return {"name": name, "valueString": format_instant(value) if isinstance(value, datetime) else str(value)}

    def rows_of(table: str, found: Iterable[tuple], columns: tuple[str, ...]) -> list[dict]:
        return [
            {"name": table, "part": [part(column, value) for column, value in zip(columns, row)]}
            for row in sorted(found, key=lambda row: tuple(map(str, row)))
        ]

    return {
        "resourceType": "Parameters",
        "parameter": [
            *rows_of("token", rows.tokens, ("param", "system", "code")),
            *rows_of("string", rows.strings, ("param", "normalized", "exact")),
            *rows_of("date", rows.dates, ("param", "low", "high")),
            *rows_of("reference", rows.references, ("param", "targetType", "targetId")),
            *rows_of("number", rows.numbers, ("param", "value")),
            *rows_of("quantity", rows.quantities, ("param", "system", "code", "value")),
        ],
    }
