"""The steps of the REINDEX job, written against the batch job-author API only.

generate-ranges → load-ids → reindex, as HAPI's. The first two are the shared range walk
(`fhirjobs.common.ranges`: ranges of logical ids, then the matching ids in pages of batch_size); `reindex`
rebuilds the index rows of one page in one short transaction (`storage.reindex_resources`; the built-in
parameters extracted and compared inside PostgreSQL when FHIR_INDEX_IN_DATABASE).

Every chunk is the same work when run again (a lost worker, a restart): ranges and pages derive from the
parameters and the ids, and a reindex of a resource replaces its rows. A restart resumes from the chunks
not yet done: the completed ranges and pages stay done.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from django.conf import settings

from batch.api import DataSink, StepContext
from fhirstore.custom_params import current_registry
from fhirstore.resource_types import RESOURCE_TYPES
from fhirstore.search_params import params_for
from fhirstore.storage import reindex_resources


def unknown_codes(urls: Sequence[str], codes: Iterable[str]) -> list[str]:
    """Those of `codes` that no parameter of the urls' types (all types when there are none) has."""
    types = {url.partition("?")[0] for url in urls} or RESOURCE_TYPES
    known = set().union(*(set(params_for(t)) | set(current_registry().by_type.get(t, {})) for t in types))
    return sorted(set(codes) - known)


def reindex(context: StepContext, sink: DataSink) -> int:
    """Rebuild the index rows of one page of resources (of the chosen parameters only, if any)."""
    resource_type = context.data["type"]
    codes = context.parameters["search_parameters"]
    return reindex_resources(
        resource_type,
        context.data["ids"],
        params=index_names(resource_type, codes) if codes else None,
        in_database=settings.FHIR_INDEX_IN_DATABASE,
    )


def index_names(resource_type: str, codes: Sequence[str]) -> list[str]:
    """The `param` values of the index rows of these parameters (an alias keeps its rows under another name)."""
    built_in, custom = params_for(resource_type), current_registry().by_type.get(resource_type, {})
    return sorted({built_in[code].index_name if code in built_in and code not in custom else code for code in codes})
