"""generate-ranges → load-ids: the opening steps of a job that works through stored resources by search URL.

As HAPI's `GenerateRangeChunksStep` and `LoadIdsStep` open REINDEX, DELETE_EXPUNGE, MDM_CLEAR…, a job here
declares the parameters `urls` (`Type?` or `Type?search`; none: every stored type) and `batch_size`
(as `fhirjobs.reindex.definition` does), opens with these two steps, and adds the step of its own that takes `{type, ids}`:

- `generate_ranges` cuts each url's type into ranges of RANGE_PAGES × batch_size logical ids, the
  boundaries found by index-only scans (`scan.id_after`), and emits one chunk `{url, after, until}` per range;
- `load_ids` emits the ids of one range that match its url, in pages of batch_size, one chunk `{type, ids}`
  each.

A job whose step writes to every row of a page (the delete-expunge) walks by row key instead:
`generate_key_ranges` cuts each url's type into ranges of its row keys (`fhirstore_resource.id`, about
RANGE_PAGES × batch_size of its rows each) and `load_keys` emits the matching keys of one range in key order,
pages `{type, keys}`. Logical ids are random (UUIDs) where keys follow the order rows were written in, so a page
by logical id has its rows, and their index rows, spread one or two to a disk page over the whole table, and
a page by key has them side by side: 1,000 generated Observations by logical id lay on 908 heap pages of
`fhirstore_resource` and dirtied ~700 pages of each big index table when deleted (a full-page image each after a
checkpoint), by key on 192 and 2–27 (the page's DELETE statement 658 → 184 ms).

Every chunk is the same work when run again (a lost worker, a restart): ranges and pages derive from the
parameters and the ids, so a restart resumes from the chunks not yet done. The walk reads the store as it is
now; the export, which must read it as it was at its transactionTime and counts what it reads, walks with
`fhirstore.scan`'s snapshot pages instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from django.db.models import QuerySet

from batch.api import DataSink, StepContext
from fhirstore.exceptions import InvalidRequest
from fhirstore.models import Resource
from fhirstore.scan import id_after, key_span, stored_types
from fhirstore.search import matching_resources, type_filter

RANGE_PAGES = 10  # pages of batch_size ids per range: a range is one load-ids chunk
INDEX_DRIVERS = ("SearchParameter",)  # their rows drive the index: change or delete them through the REST API


def url_problems(parameters: Mapping[str, Any]) -> Iterable[str]:
    """Every url must be a `Type?search` the store can run (a job definition's `validate_with`)."""
    for url in parameters["urls"]:
        try:
            type_filter(url)
        except InvalidRequest as error:
            yield f"url {url!r}: {error.message}"


def changed_url_problems(parameters: Mapping[str, Any], *, what: str, done: str) -> Iterable[str]:
    """The urls of a job that changes what they match (`what`: "patch"; `done`: "bulk-patched"): at least one,
    none of a type whose rows drive the index (change those through the REST API), each one the store can run."""
    if not parameters["urls"]:
        yield f"at least one url (Type?search) is needed: what to {what}"
    for url in parameters["urls"]:
        if url.partition("?")[0] in INDEX_DRIVERS:
            yield f"url {url!r}: {url.partition('?')[0]} resources cannot be {done}"
    yield from url_problems(parameters)


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
            until = id_after(resource_type, after, offset=range_size - 1)
            sink.accept({"url": url, "after": after, "until": until})
            ranges += 1
            if until is None:
                break
            after = until
    return ranges


def load_ids(context: StepContext, sink: DataSink) -> int:
    """The ids in (after, until] that match the url, in pages of batch_size, one chunk each."""
    assert context.data is not None, "load-ids runs on the chunks generate-ranges emits"
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


def generate_key_ranges(context: StepContext, sink: DataSink) -> int:
    """One chunk `{url, after_key, until_key}` per range of row keys of each url's type (every stored type when
    there are no urls), from its lowest key to its highest at the start: ranges as wide as RANGE_PAGES ×
    batch_size of its rows would be if they were spread evenly over its keys (where they are not, a range
    just makes more or fewer pages). Rows written later, with higher keys, are not in the walk."""
    urls = context.parameters["urls"] or [f"{resource_type}?" for resource_type in stored_types()]
    range_rows = RANGE_PAGES * context.parameters["batch_size"]
    ranges = 0
    for url in urls:
        context.check_cancelled()
        lowest, highest, count = key_span(url.partition("?")[0])
        width = max(1, -(-(highest - lowest + 1) * range_rows // max(count, 1)))
        for after in range(lowest - 1, highest, width) if count else [0]:
            sink.accept({"url": url, "after_key": after, "until_key": min(after + width, highest)})
            ranges += 1
    return ranges


def load_keys(context: StepContext, sink: DataSink) -> int:
    """The row keys in (after_key, until_key] of the resources that match the url, in key order, in pages of
    batch_size, one chunk `{type, keys}` each."""
    assert context.data is not None, "load-keys runs on the chunks generate-key-ranges emits"
    resource_type, conditions = type_filter(context.data["url"])
    return _key_pages(context, context.data, sink, resource_type, matching_resources(resource_type, conditions))


def load_every_key(context: StepContext, sink: DataSink) -> int:
    """As `load_keys`, for every row of the url's type, deleted resources too (`$expunge` removes those)."""
    assert context.data is not None, "load-keys runs on the chunks generate-key-ranges emits"
    resource_type = context.data["url"].partition("?")[0]
    return _key_pages(context, context.data, sink, resource_type, Resource.objects.filter(resource_type=resource_type))


def _key_pages(
    context: StepContext, data: Mapping[str, Any], sink: DataSink, resource_type: str, resources: QuerySet[Resource]
) -> int:
    after, until = data["after_key"], data["until_key"]
    resources = resources.filter(id__lte=until)
    size, loaded = context.parameters["batch_size"], 0
    while True:
        keys = list(resources.filter(id__gt=after).order_by("id").values_list("id", flat=True)[:size])
        if keys:
            sink.accept({"type": resource_type, "keys": keys})
            loaded += len(keys)
        if len(keys) < size:
            return loaded
        after = keys[-1]
