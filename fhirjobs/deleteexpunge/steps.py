"""The steps of the DELETE_EXPUNGE job of its own, on the batch job-author API only.

generate-ranges → load-ids (the shared range walk, `fhirjobs.common.ranges`, by row key: a page's rows are
neighbours on disk, and many resources sharing one lastUpdated are all found, HAPI #5150) → delete-expunge →
report. The job is gated: every page is listed before the first is deleted, so deleting never shifts the walk.

`delete_expunge` removes one page in one short transaction, together with the row that records what it
removed (`ExpungedChunk`): run again, the chunk finds that row, deletes nothing and counts the same. While an
export reads one of the page's types as at its transactionTime, the page waits for it to end
(`fhirjobs.common.snapshots`): deleted now, resources that existed then would be missing from its files.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from django.db import transaction

from batch.api import DataSink, JobFailed, StepContext
from fhirjobs.common.snapshots import wait_for_snapshot_readers
from fhirjobs.deleteexpunge.models import ExpungedChunk
from fhirstore.exceptions import ResourceReferenced
from fhirstore.expunge import expunge_resources, forget_searches, referrals_into, refuse_if_referenced
from fhirstore.snapshots import mark_expunged

REFUSED = "Refused: "  # a failure's message starts with this when referrers stopped the job (409, not 500)


def delete_expunge(context: StepContext, sink: DataSink) -> int:
    """Delete one page of resources for good (and, with cascade, what refers to them); how many went."""
    context.check_cancelled()
    keys = context.data["keys"]
    parameters = context.parameters
    with transaction.atomic():
        done = ExpungedChunk.objects.filter(chunk_id=context.chunk_id).values_list("counts", flat=True).first()
        if done is not None:
            return sum(done.values())
        wait_for_snapshot_readers([context.data["type"]], locked=True)  # an export reading them goes first
        try:
            if not parameters["cascade"]:
                refuse_if_referenced(referrals_into(keys, excluding_urls=parameters["urls"]))
            removed = expunge_resources(
                keys, cascade_rounds=parameters["cascade_max_rounds"] if parameters["cascade"] else 0
            )
        except ResourceReferenced as error:
            raise JobFailed(REFUSED + error.message) from None
        if cascaded := set(removed) - {context.data["type"]}:
            wait_for_snapshot_readers(cascaded, locked=True)  # the referrers' types too: rolls the page back
        ExpungedChunk.objects.create(
            chunk_id=context.chunk_id, job_instance_id=context.instance_id, counts=dict(removed)
        )
        if removed:
            mark_expunged(removed)  # the last statement: no snapshot as of an earlier instant from now on
    return sum(removed.values())


def report(context: StepContext, inputs: Iterable[dict]) -> dict:
    """The counts per type, from the chunks' records; the cached searches over those types are dropped."""
    counts: Counter[str] = Counter()
    for chunk_counts in ExpungedChunk.objects.filter(job_instance_id=context.instance_id).values_list(
        "counts", flat=True
    ):
        counts.update(chunk_counts)
    url_types = {url.partition("?")[0] for url in context.parameters["urls"]}
    forget_searches(sorted(url_types | set(counts)))
    return {"deleted": dict(sorted(counts.items())), "total": sum(counts.values())}
