"""The step of the EXPUNGE job of its own: the superseded versions of one page of resources, in one short
transaction with the row recording the count (run again, a chunk deletes nothing more and counts the same).
While an export reads the type as at its transactionTime, the page waits for it to end: the version current
then may be one of those superseded since (`fhirjobs.common.snapshots`)."""

from __future__ import annotations

from collections.abc import Iterable

from django.db import transaction
from django.db.models import Sum

from batch.api import DataSink, StepContext
from fhirjobs.common.snapshots import wait_for_snapshot_readers
from fhirjobs.expunge.models import ExpungedVersionsChunk
from fhirstore.expunge import expunge_previous_versions


def expunge(context: StepContext, sink: DataSink) -> int:
    """Delete the previous versions of one page of resources; how many versions went."""
    context.check_cancelled()
    with transaction.atomic():
        done = (
            ExpungedVersionsChunk.objects.filter(chunk_id=context.chunk_id).values_list("versions", flat=True).first()
        )
        if done is not None:
            return done
        wait_for_snapshot_readers([context.data["type"]], locked=True)  # an export may read those versions
        versions = expunge_previous_versions(context.data["type"], context.data["ids"])
        ExpungedVersionsChunk.objects.create(
            chunk_id=context.chunk_id, job_instance_id=context.instance_id, versions=versions
        )
    return versions


def report(context: StepContext, inputs: Iterable[dict]) -> dict:
    """The versions removed, from the chunks' records."""
    total = ExpungedVersionsChunk.objects.filter(job_instance_id=context.instance_id).aggregate(n=Sum("versions"))["n"]
    return {"count": total or 0}
