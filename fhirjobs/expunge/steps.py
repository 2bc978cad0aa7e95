"""The step of the EXPUNGE job of its own: what was asked (`fhirstore.expunge.ExpungeKinds`) of one page of
resources, in one short transaction with the row recording the count (run again, a chunk deletes nothing more
and counts the same). While an export reads the page's type as at its transactionTime, the page waits for it to
end: what it would remove may be what the export reads (`fhirjobs.common.snapshots`).

With a `limit`, the pages of one job take turns (a lock per job, for the transaction) and each removes at most
what the pages before it left of the limit: the count is exact however many run at once or run again."""

from __future__ import annotations

from collections.abc import Iterable

from django.db import connection, transaction
from django.db.models import Sum

from batch.api import DataSink, StepContext
from fhirjobs.common.snapshots import wait_for_snapshot_readers
from fhirjobs.expunge.models import ExpungedVersionsChunk
from fhirstore.expunge import ExpungeKinds, expunge_previous_versions, expunge_rows, forget_searches
from fhirstore.resource_types import RESOURCE_TYPES
from fhirstore.snapshots import mark_expunged

LIMIT_LOCK_SPACE = 0x5E4B  # the first key of the advisory lock a limited job's pages take turns by


def expunge_page(context: StepContext, sink: DataSink) -> int:
    """Expunge what was asked of one page of resources (by row key); how many versions went."""
    context.check_cancelled()
    parameters = context.parameters
    with transaction.atomic():
        done = _recorded(context)
        if done is not None:
            return done
        limit = parameters["limit"]
        if limit is not None:
            limit -= _taking_turns(context)
        wait_for_snapshot_readers([context.data["type"]], locked=True)  # an export may read what goes
        kinds = ExpungeKinds(
            deleted=parameters["deleted_resources"],
            previous=parameters["previous_versions"],
            everything=parameters["everything"],
        )
        versions = expunge_rows(context.data["keys"], kinds, limit=limit) if limit is None or limit > 0 else 0
        _record(context, versions)
    return versions


def report(context: StepContext, inputs: Iterable[dict]) -> dict:
    """The versions removed, from the chunks' records; after expungeEverything, or deleted resources
    (cached search pages may name them), the cached searches over the types go too."""
    parameters = context.parameters
    if parameters["everything"] or parameters["deleted_resources"]:
        forget_searches([url.partition("?")[0] for url in parameters["urls"]] or sorted(RESOURCE_TYPES))
    return {"count": _removed_so_far(context)}


def _recorded(context: StepContext) -> int | None:
    return ExpungedVersionsChunk.objects.filter(chunk_id=context.chunk_id).values_list("versions", flat=True).first()


def _record(context: StepContext, versions: int) -> None:
    """This page's count, in the transaction that removed them (a rerun reads it instead of expunging again);
    then, if anything went, the type's expunge mark as the transaction's last statement: no export can take a
    snapshot as of an earlier instant from now on."""
    ExpungedVersionsChunk.objects.create(
        chunk_id=context.chunk_id, job_instance_id=context.instance_id, versions=versions
    )
    if versions:
        mark_expunged([context.data["type"]])


def _taking_turns(context: StepContext) -> int:
    """Wait for this job's other pages to commit (a lock until this transaction ends); what they removed."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", [LIMIT_LOCK_SPACE, str(context.instance_id)])
    return _removed_so_far(context)


def _removed_so_far(context: StepContext) -> int:
    records = ExpungedVersionsChunk.objects.filter(job_instance_id=context.instance_id)
    return records.aggregate(n=Sum("versions"))["n"] or 0


def expunge(context: StepContext, sink: DataSink) -> int:
    """(v1) Delete the previous versions of one page of resources, by logical id; how many versions went."""
    context.check_cancelled()
    with transaction.atomic():
        done = _recorded(context)
        if done is not None:
            return done
        wait_for_snapshot_readers([context.data["type"]], locked=True)  # an export may read those versions
        versions = expunge_previous_versions(context.data["type"], context.data["ids"])
        _record(context, versions)
    return versions


def report_v1(context: StepContext, inputs: Iterable[dict]) -> dict:
    """(v1) The versions removed, from the chunks' records."""
    return {"count": _removed_so_far(context)}
