"""Undoing Bulk Submit imports: what a `stopped` submission loaded, and what only a replaced manifest brought.

Every version a submission's import writes is recorded (`ImportWrite`, one COPY per write batch). The
BULK_SUBMIT_UNDO job takes them back, with the shape of every FHIR job (a first step emitting pages of keys, a
step working on a page in one transaction, a reduction for the report):

- `list-writes` waits while any import being undone still has a chunk running (a cancelled import's chunk
  finishes the batch it writes), then emits the resources they wrote, `batch_size` to a page, in key order —
  leaving out those the replacing import brings (its staged ids, kept for this until the report);
- `undo` reverts one page (`storage.revert_versions`): a resource the imports created is deleted, one they
  changed gets the version before theirs back as a new version — only while theirs is still the current one;
  a later write by anyone else wins and is reported. The page's records go in the same transaction, with its
  counts (`UndoSummary`), so a chunk run again after a worker died finds nothing left to do and the counts stay;
- `report` adds up the counts and drops the replacing import's staged ids.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson
from django.conf import settings
from django.db import connection, transaction

from batch import control
from batch.api import DataSink, RetryChunkLater, StepContext
from batch.control import JobNotFound
from fhirjobs.bulkimport.loader import drop_staged_ids
from fhirjobs.bulkimport.models import BulkImport, BulkSubmission, UndoSummary
from fhirstore.storage import Revert, revert_versions

BULK_SUBMIT_UNDO_JOB = "BULK_SUBMIT_UNDO"  # here, not in definition.py, which imports this module's steps
WAIT_SECONDS = 2.0  # between looks at an import's running chunks
MAX_KEPT_SAMPLES = 20  # resources written since, named in the report; the rest are counted


def list_writes(context: StepContext, sink: DataSink) -> int:
    """Pages `{keys: [[type, id], …]}` of the resources the imports wrote, once none of them is still writing."""
    import_ids = context.parameters["import_ids"]
    busy = [import_id for import_id in import_ids if _still_writing(import_id)]
    if busy:
        raise RetryChunkLater(WAIT_SECONDS, f"import {busy[0]} has not ended or still has a chunk running")
    keep = context.parameters["keep_import_id"] or None
    size, after, listed = context.parameters["batch_size"], ("", ""), 0
    while True:
        context.check_cancelled()
        keys = written_keys(import_ids, after=after, limit=size, keep_import_id=keep)
        if keys:
            sink.accept({"keys": keys})
            listed += len(keys)
        if len(keys) < size:
            return listed
        after = tuple(keys[-1])


def _still_writing(import_id: str) -> bool:
    """The import's job has not ended, or a chunk of it still runs (a cancelled job's chunk ends its batch)."""
    try:
        job = control.get_job(import_id)
    except JobNotFound:
        return False
    return not job.ended or any(worker.chunks.get("IN_PROGRESS") for worker in control.chunk_workers(import_id))


def written_keys(
    import_ids: Sequence[str], *, after: tuple[str, str], limit: int, keep_import_id: str | None = None
) -> list[list[str]]:
    """`[type, id]` of resources these imports wrote, after `after` in key order; without those the import
    `keep_import_id` brings (its staged ids)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT DISTINCT w.resource_type, w.logical_id FROM bulkimport_importwrite w"
            " WHERE w.import_id = ANY(%s::uuid[]) AND (w.resource_type, w.logical_id) > (%s, %s)"
            " AND NOT EXISTS (SELECT FROM bulkimport_stagedid s WHERE s.import_id = %s"
            " AND s.logical_id = w.logical_id AND s.resource_type = w.resource_type)"
            " ORDER BY 1, 2 LIMIT %s",
            [list(import_ids), *after, keep_import_id, limit],
        )
        return [[resource_type, logical_id] for resource_type, logical_id in cursor.fetchall()]


def undo(context: StepContext, sink: DataSink) -> int:
    """Revert one page and drop its records, with its counts, in one transaction."""
    with transaction.atomic():
        summary = undo_writes(context.parameters["import_ids"], context.data["keys"])
        if summary["removed"] or summary["restored"] or summary["kept"]:
            UndoSummary.objects.update_or_create(
                chunk_id=context.chunk_id, defaults={"job_id": context.instance_id, "summary": summary}
            )
        elif not UndoSummary.objects.filter(chunk_id=context.chunk_id).exists():  # not a rerun of a done page
            UndoSummary.objects.create(chunk_id=context.chunk_id, job_id=context.instance_id, summary=summary)
    return len(context.data["keys"])


def undo_writes(import_ids: Sequence[str], keys: Sequence[Sequence[str]]) -> dict[str, Any]:
    """Take back what these imports wrote to these resources, in the caller's transaction; forget the record."""
    page = orjson.dumps([list(key) for key in keys]).decode()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT w.resource_type, w.logical_id, min(w.version_id), max(w.version_id)"
            " FROM bulkimport_importwrite w JOIN jsonb_array_elements(%s::jsonb) AS k(key)"
            " ON w.resource_type = k.key->>0 AND w.logical_id = k.key->>1"
            " WHERE w.import_id = ANY(%s::uuid[]) GROUP BY 1, 2",
            [page, list(import_ids)],
        )
        reverts = [Revert(*row) for row in cursor.fetchall()]
    reverted = revert_versions(reverts)
    with connection.cursor() as cursor:
        cursor.execute(
            "DELETE FROM bulkimport_importwrite w USING jsonb_array_elements(%s::jsonb) AS k(key)"
            " WHERE w.import_id = ANY(%s::uuid[]) AND w.resource_type = k.key->>0 AND w.logical_id = k.key->>1",
            [page, list(import_ids)],
        )
    return {
        "removed": len(reverted.removed),
        "restored": len(reverted.restored),
        "kept": len(reverted.kept),
        "kept_samples": [
            f"{resource_type}/{logical_id} is at version {version}, written since"
            for resource_type, logical_id, version in reverted.kept[:MAX_KEPT_SAMPLES]
        ],
    }


def report(context: StepContext, inputs: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Resources removed, restored, and kept (written since by someone else), with samples of the kept."""
    totals: dict[str, Any] = {"removed": 0, "restored": 0, "kept": 0, "kept_samples": []}
    for summary in UndoSummary.objects.filter(job_id=context.instance_id).values_list("summary", flat=True):
        for name in ("removed", "restored", "kept"):
            totals[name] += summary[name]
        totals["kept_samples"] += summary["kept_samples"][: MAX_KEPT_SAMPLES - len(totals["kept_samples"])]
    if context.parameters["keep_import_id"]:
        drop_staged_ids(uuid.UUID(context.parameters["keep_import_id"]))
    return totals


def start_undo(submission: BulkSubmission, import_ids: list[str], *, keep: str = "", user: str = "") -> uuid.UUID:
    """The BULK_SUBMIT_UNDO job of `import_ids` (all of a stopped submission's, or the one a manifest replaced,
    keeping what the replacing import `keep` brings)."""
    job = control.start_job(
        BULK_SUBMIT_UNDO_JOB,
        {"submission_id": str(submission.id), "import_ids": import_ids, "keep_import_id": keep},
        started_by=user,
        max_concurrent_chunks=settings.BULK_IMPORT_MAX_CONCURRENT_CHUNKS or None,
    )
    return job.id


def undo_replaced(import_id: uuid.UUID) -> None:
    """Once an import that replaces another loaded everything: the undo of what only the other brought, started
    once. Not when the submission was stopped meanwhile (its own undo takes back every import)."""
    with transaction.atomic():
        bulk_import = (
            BulkImport.objects.select_for_update(of=("self",))
            .select_related("submission", "owner")
            .filter(id=import_id, replaces__isnull=False, undo_job_id__isnull=True)
            .first()
        )
        if bulk_import is None or bulk_import.submission.undo_job_id is not None:
            return
        bulk_import.undo_job_id = start_undo(
            bulk_import.submission,
            [str(bulk_import.replaces_id)],
            keep=str(bulk_import.id),
            user=bulk_import.owner.get_username() if bulk_import.owner else "",
        )
        bulk_import.save(update_fields=["undo_job_id"])
