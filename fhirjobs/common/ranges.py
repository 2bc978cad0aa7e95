"""generate-ranges → load-ids: the opening steps of a job that works through stored resources by search URL.

As HAPI's `GenerateRangeChunksStep` and `LoadIdsStep` open REINDEX, DELETE_EXPUNGE, MDM_CLEAR…, a job here
declares the parameters `urls` (`Type?` or `Type?search`; none: every stored type) and `batch_size`
(as `fhirjobs.reindex.definition` does), opens with these two steps, and adds the step of its own that takes `{type, ids}`:

- `generate_ranges` cuts each url's type into ranges of RANGE_PAGES × batch_size logical ids, the
  boundaries found by index-only scans (`scan.id_after`), and emits one chunk `{url, after, until}` per range;
- `load_ids` emits the ids of one range that match its url, in pages of batch_size, one chunk `{type, ids}`
  each.

Every chunk is the same work when run again (a lost worker, a restart): ranges and pages derive from the
parameters and the ids, so a restart resumes from the chunks not yet done. The walk reads the store as it is
now; the export, which must read it as it was at its transactionTime and counts what it reads, walks with
`fhirstore.scan`'s snapshot pages instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from batch.api import DataSink, StepContext
from fhirstore.exceptions import InvalidRequest
from fhirstore.scan import id_after, stored_types
from fhirstore.search import matching_resources, type_filter

RANGE_PAGES = 10  # pages of batch_size ids per range: a range is one load-ids chunk


def url_problems(parameters: Mapping[str, Any]) -> Iterable[str]:
    """Every url must be a `Type?search` the store can run (a job definition's `validate_with`)."""
    for url in parameters["urls"]:
        try:
            type_filter(url)
        except InvalidRequest as error:
            yield f"url {url!r}: {error.message}"


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
