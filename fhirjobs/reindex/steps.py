"""The steps of the REINDEX job, written against the batch job-author API only.

generate-ranges → load-ids → reindex, as HAPI's. `generate-ranges` cuts each url's type into ranges of
logical ids (RANGE_PAGES × batch_size ids each, boundaries found by index-only scans), one chunk per range;
`load-ids` emits the range's matching ids (the url's search applied) in pages of batch_size; `reindex`
rebuilds the index rows of one page in one short transaction (`storage.reindex_resources`).

Every chunk is the same work when run again (a lost worker, a restart): ranges and pages derive from the
parameters and the ids, and a reindex of a resource replaces its rows. A restart resumes from the chunks
not yet done: the completed ranges and pages stay done.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from django.db import connection

from batch.api import DataSink, StepContext
from fhirstore.custom_params import current_registry
from fhirstore.exceptions import InvalidRequest
from fhirstore.models import Resource
from fhirstore.resource_types import RESOURCE_TYPES
from fhirstore.search import matching_resources, type_filter
from fhirstore.search_params import params_for
from fhirstore.storage import reindex_resources

REINDEX_JOB = "REINDEX"
RANGE_PAGES = 10  # pages of batch_size ids per range: a range is one load-ids chunk


def request_problems(parameters: Mapping[str, Any]) -> Iterable[str]:
    """Every url must be a `Type?search` the store can run.

    Search parameter codes are not checked here: rebuilding the rows of a code no parameter has any more
    removes them, which is how a deleted SearchParameter's rows go. `services.start_reindex` checks them
    for people, who may mistype.
    """
    for url in parameters["urls"]:
        try:
            type_filter(url)
        except InvalidRequest as error:
            yield f"url {url!r}: {error.message}"


def unknown_codes(urls: Sequence[str], codes: Iterable[str]) -> list[str]:
    """Those of `codes` that no parameter of the urls' types (all types when there are none) has."""
    types = {url.partition("?")[0] for url in urls} or RESOURCE_TYPES
    known = set().union(*(set(params_for(t)) | set(current_registry().by_type.get(t, {})) for t in types))
    return sorted(set(codes) - known)


def generate_ranges(context: StepContext, sink: DataSink) -> int:
    """One chunk per range of ids of each url's type; every stored type when there are no urls."""
    urls = context.parameters["urls"] or [f"{resource_type}?" for resource_type in stored_types()]
    range_size = RANGE_PAGES * context.parameters["batch_size"]
    ranges = 0
    for url in urls:
        resource_type = url.partition("?")[0]
        after = None
        while True:
            context.check_cancelled()
            until = _id_after(resource_type, after, offset=range_size - 1)
            sink.accept({"url": url, "after": after, "until": until})
            ranges += 1
            if until is None:
                break
            after = until
    return ranges


def load_ids(context: StepContext, sink: DataSink) -> int:
    """The ids in (after, until] that match the url, in pages of batch_size, one chunk each."""
    url, after, until = context.data["url"], context.data["after"], context.data["until"]
    resource_type, conditions = type_filter(url)
    resources = matching_resources(resource_type, conditions)
    if until is not None:
        resources = resources.filter(logical_id__lte=until)
    size, loaded = context.parameters["batch_size"], 0
    while True:
        page = resources.filter(logical_id__gt=after) if after is not None else resources
        ids = list(page.order_by("logical_id").values_list("logical_id", flat=True)[:size])
        if ids:
            sink.accept({"type": resource_type, "ids": ids})
            loaded += len(ids)
        if len(ids) < size:
            return loaded
        after = ids[-1]


def reindex(context: StepContext, sink: DataSink) -> int:
    """Rebuild the index rows of one page of resources (of the chosen parameters only, if any)."""
    resource_type = context.data["type"]
    codes = context.parameters["search_parameters"]
    return reindex_resources(resource_type, context.data["ids"],
                             params=index_names(resource_type, codes) if codes else None)


def stored_types() -> list[str]:
    """The resource types that have stored resources, sorted (one index probe per known type)."""
    return [t for t in sorted(RESOURCE_TYPES) if Resource.objects.filter(resource_type=t).exists()]


def index_names(resource_type: str, codes: Sequence[str]) -> list[str]:
    """The `param` values of the index rows of these parameters (an alias keeps its rows under another name)."""
    built_in, custom = params_for(resource_type), current_registry().by_type.get(resource_type, {})
    return sorted({built_in[code].index_name if code in built_in and code not in custom else code for code in codes})


def _id_after(resource_type: str, after: str | None, *, offset: int) -> str | None:
    """The id `offset` places after `after` in id order (an index-only scan); None past the last one."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT logical_id FROM fhirstore_resource WHERE resource_type = %s"
            f"{' AND logical_id > %s' if after is not None else ''} ORDER BY logical_id OFFSET %s LIMIT 1",
            [resource_type, *([after] if after is not None else []), offset],
        )
        row = cursor.fetchone()
    return row[0] if row else None
