"""Expunging waits for the snapshot readers (and the imports): the rule the delete-expunge and `$expunge` steps
share.

An export reads the store as at its transactionTime, from the history; removing resources or versions for good
while it runs would silently take from its files what existed then. The export holds its types
(`fhirstore.snapshots`); an expunging chunk looks in its transaction, under the types' locks, before it
deletes (and, for the referrers a cascade deleted, before it commits). While a hold covers a type it removes,
the chunk rolls back and is run again later (`RetryChunkLater`, as the import undo waits for imports): no
transaction stays open while it waits, the job page says whom it waits for, and the chunk counts no error
however long the export takes. An import holds every type the same way while it writes (its files may hold any
type): a page waits for it too, and neither deletes what the import is writing nor lets it refer to what the
page deletes.
"""

from __future__ import annotations

from collections.abc import Iterable

from batch.api import RetryChunkLater
from fhirstore.snapshots import lock_against_snapshots, snapshot_holds

WAIT_SECONDS = 5.0  # between looks at the holds: an export takes seconds to hours, a chunk's poll is one query


def wait_for_snapshot_readers(resource_types: Iterable[str], *, locked: bool = False) -> None:
    """Raise RetryChunkLater while a live snapshot hold covers one of these types. `locked`: in the
    transaction that expunges them, before it commits (takes the types' locks, see `fhirstore.snapshots`)."""
    if reader := snapshot_reader_in_the_way(resource_types, locked=locked):
        raise RetryChunkLater(WAIT_SECONDS, reader)


def snapshot_reader_in_the_way(resource_types: Iterable[str], *, locked: bool = False) -> str | None:
    """Who reads one of these types as of a past instant now (a message), or None: expunging them may go on."""
    types = set(resource_types)
    if locked and not lock_against_snapshots(types):
        return f"an export over {', '.join(sorted(types))} is being kicked off"
    holds = snapshot_holds(types)
    if not holds:
        return None
    oldest = holds[0]
    held = ", ".join(sorted(set(oldest.resource_types) & types))
    if oldest.purpose == "export":
        who = f"{len(holds)} snapshot reader(s) such as export {oldest.holder} read {held} as of {oldest.as_of.isoformat()}"
    else:
        who = f"{len(holds)} holder(s) such as {oldest.purpose} {oldest.holder} write {held}"
    return f"{who}: expunging waits until they end (or their hold lapses, {oldest.expires_at.isoformat()})"
