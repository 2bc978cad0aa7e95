"""The reindex as plain functions: start one, start one for changed SearchParameters, a dry run, who may.

The views, the `reindex` command and the SearchParameter write path are thin over these.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.conf import settings

from batch import control
from batch.control import InvalidParameters, JobSnapshot
from fhirstore.models import CustomSearchParameter
from fhirstore.exceptions import InvalidRequest
from fhirstore.fhirdates import format_instant
from fhirjobs.reindex.exceptions import InvalidReindexRequest
from fhirjobs.reindex.steps import REINDEX_JOB, unknown_codes
from fhirstore.resource_types import is_resource_type
from fhirstore.search_params import IndexRows
from fhirstore.storage import index_rows_of, read_resource

PARAMETER_CHANGE_STARTER = "system:search-parameter-change"  # `started_by` of the automatic jobs
REINDEX_PERMISSION = "fhirstore.reindex"


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
        problems += [f"url {url!r} is not of type {resource_type}" for url in collected.urls
                     if url.partition("?")[0] != resource_type]
    if problems:
        raise InvalidReindexRequest(problems)
    return ReindexRequest(tuple(collected.urls), collected.batch_size[0] if collected.batch_size else None,
                          tuple(collected.search_parameters))


def _value(parameter: dict) -> object:
    return next((value for key, value in parameter.items() if key.startswith("value")), None)


def start_reindex(request: ReindexRequest, *, started_by: str) -> JobSnapshot:
    """Start a REINDEX job; InvalidReindexRequest when its parameters are not valid."""
    unknown = unknown_codes(request.urls, request.search_parameters)
    if unknown:
        raise InvalidReindexRequest([f"unknown search parameters: {', '.join(unknown)}"])
    try:
        return control.start_job(REINDEX_JOB, request.job_parameters(), started_by=started_by,
                                 max_concurrent_chunks=settings.REINDEX_MAX_CONCURRENT_CHUNKS or None)
    except InvalidParameters as error:
        raise InvalidReindexRequest(list(error.problems)) from None


def reindex_changed_parameters(sender: object, *, search_parameter: int, resource_types: Sequence[str],
                               codes: Sequence[str], **_: object) -> None:
    """`search_parameters_changed`: one job over the parameter's base types, rebuilding only its rows. It
    starts when the SearchParameter's transaction commits; the parameter is searchable when it completes."""
    job = control.start_job(REINDEX_JOB, {"urls": [f"{t}?" for t in resource_types], "search_parameters": list(codes)},
                            started_by=PARAMETER_CHANGE_STARTER,
                            max_concurrent_chunks=settings.REINDEX_MAX_CONCURRENT_CHUNKS or None)
    CustomSearchParameter.objects.filter(search_parameter_id=search_parameter).update(reindex_job_id=job.id)


def dry_run(resource_type: str, logical_id: str) -> IndexRows:
    """The index rows a reindex would write for this resource now (404/410 as a read)."""
    if not is_resource_type(resource_type):
        raise InvalidRequest(f"Unknown resource type {resource_type!r}")
    return index_rows_of(read_resource(resource_type, logical_id).body)


def dry_run_parameters(rows: IndexRows) -> dict:
    """Index rows as a Parameters resource: one parameter per row, grouped by table, as HAPI's dry run."""
    def part(name: str, value: object) -> dict:
        return {"name": name, "valueString": format_instant(value) if isinstance(value, datetime) else str(value)}

    def rows_of(table: str, found: Iterable[tuple], columns: tuple[str, ...]) -> list[dict]:
        return [{"name": table, "part": [part(column, value) for column, value in zip(columns, row)]}
                for row in sorted(found, key=lambda row: tuple(map(str, row)))]

    return {"resourceType": "Parameters", "parameter": [
        *rows_of("token", rows.tokens, ("param", "system", "code")),
        *rows_of("string", rows.strings, ("param", "normalized", "exact")),
        *rows_of("date", rows.dates, ("param", "low", "high")),
        *rows_of("reference", rows.references, ("param", "targetType", "targetId")),
        *rows_of("number", rows.numbers, ("param", "value")),
        *rows_of("quantity", rows.quantities, ("param", "system", "code", "value")),
    ]}
