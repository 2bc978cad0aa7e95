"""Which resource ids an export takes, type by type, in pages of ids in id order: the `fetch-resources` walk.

System level: every current resource of the type. Patient level with a `patient` list, and group level:
the Patient compartments of those patients (`scan.compartment_ids_page`). Patient level without a list:
every resource of the type that is in some Patient's compartment. `_since` and `_typeFilter` narrow each.

An unfiltered walk pages by keyset (`scan.iter_resource_id_pages`: each page an index-only range scan). A
filtered one (`_typeFilter`, or "in some compartment") is one streamed query per type instead (a server-side
cursor read a page at a time): paged, each page would evaluate the filter's index subquery in full again,
which makes the walk quadratic (measured: 134k Observations filtered by category, 5.6 s paged).
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from itertools import islice

from django.db.models import Q

from fhirjobs.bulkexport.parameters import Level
from fhirstore.models import ReferenceIndex
from fhirstore.scan import (
    current_resources,
    iter_compartment_id_pages,
    iter_resource_id_pages,
)
from fhirstore.search import type_filter
from fhirstore.search_params import patient_compartment_params


def type_filters_for(resource_type: str, expressions: Sequence[str]) -> list[Q]:
    """The `_typeFilter`s of one type as filters (a resource passes when it matches any)."""
    return [type_filter(expression)[1] for expression in expressions if expression.partition("?")[0] == resource_type]


def id_pages(resource_type: str, *, level: Level, patients: Sequence[str], since: datetime | None,
             until: datetime, filters: Sequence[Q], page_size: int) -> Iterator[list[str]]:
    """The ids to export of one type as the store was at `until`, page by page in id order; `patients` are the
    listed patients or members."""
    if level is Level.GROUP or (level is Level.PATIENT and patients):
        if not patients:
            return iter(())  # a Group without members
        return iter_compartment_id_pages(resource_type, patients, since=since, until=until, filters=filters,
                                         page_size=page_size)
    if level is Level.PATIENT and resource_type != "Patient":
        in_a_compartment = _in_some_patient_compartment(resource_type)
        filters = [condition & in_a_compartment for condition in filters] or [in_a_compartment]
    if not filters:
        return iter_resource_id_pages(resource_type, since=since, until=until, page_size=page_size)
    return _streamed_pages(resource_type, since, until, filters, page_size)


def _streamed_pages(resource_type: str, since: datetime | None, until: datetime, filters: Sequence[Q],
                    page_size: int) -> Iterator[list[str]]:
    resources = current_resources(resource_type, since=since, until=until, filters=filters)
    ids = resources.order_by("logical_id").values_list("logical_id", flat=True).iterator(chunk_size=page_size)
    while page := list(islice(ids, page_size)):
        yield page


def _in_some_patient_compartment(resource_type: str) -> Q:
    links = ReferenceIndex.objects.filter(resource_type=resource_type, param__in=patient_compartment_params(resource_type),
                                          target_type="Patient").values("resource_id")
    return Q(pk__in=links)
