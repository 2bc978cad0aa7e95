"""The steps of the BULK_EXPORT job, written against the batch job-author API only.

fetch-resources → expand-resources → write-to-binaries → create-report, gated as HAPI's. A whole-store walk
(system level, unfiltered, the types most of the rows) emits ranges of row ids {row_ranges: [[after, last], …]}
of at most BULK_EXPORT_CHUNK_SIZE rows each: `expand` makes each range a write chunk, and `write` copies the
range's bodies from the database into one file per type, reading that stretch of the table once. Otherwise a
chunk carries one resource type and at most BULK_EXPORT_CHUNK_SIZE resources. An unfiltered system-level walk
of a few types emits id bounds {type, after, last, count}: `expand` passes them on (unless `_elements` needs
the bodies) and `write` streams the bodies of `(after, last]` from the database into the file, so they cross
the database once, as text. A filtered or compartment walk emits {type, ids} (compressed), which `expand`
turns into NDJSON (compressed) for `write`. Each `write` makes one file ({file, type, count}), or one per type
of a row range; the reducer lists them as the manifest. A selection judged by index rows (compartments,
`_typeFilter`) is cut into pages at fixed id bounds, some empty (see `selection.id_pages`). Organized by Patient (`organizeOutputBy`), the walk
emits pages of patient ids {patients_zlib} instead, and `write` makes one file of their Patient blocks. With `_since`, deletions travel as ids (`deleted: true`) into transaction Bundles, listed
under `deleted`; at Patient and Group level those that were in the compartments when deleted.

The export reads the store as it was at its transactionTime (`storage.settled_time()` at the kick-off: no
write stamped up to it is still uncommitted), so what a step reads never changes under it. Every step can
run again after a lost worker: emitted chunks and file ids derive from the chunk ids, and a rerun reads the
same thing, so it rewrites the same chunks, file and row instead of adding any.
"""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from itertools import islice, pairwise
from typing import Any

from django.conf import settings
from django.db import connection, transaction

from batch.api import CompletedJob, DataSink, JobCancelled, JobFailed, RestartedJob, StepContext, StoppedJob
from fhirjobs.bulkexport.files import delete_files, file_writer, new_file_path
from fhirjobs.bulkexport.models import BulkExport, ExportFile
from fhirjobs.bulkexport.parameters import ALWAYS_KEPT_ELEMENTS, ExportJob, Level, read_types
from fhirjobs.bulkexport.selection import associated_provenance_pages, id_pages, type_filters_for
from fhirjobs.common.chunks import pack, unpack
from fhirstore.scan import (
    Member,
    bodies_json_by_row_id,
    compartment_members,
    current_bodies_json,
    current_resources,
    deleted_in_compartments,
    group_patient_ids_at,
    iter_deleted_id_pages,
    iter_resource_id_pages,
    iter_resource_id_ranges,
    iter_row_ranges,
    range_bodies_ndjson,
    row_range_bodies_ndjson,
)
from fhirstore.snapshots import hold_snapshot_again, release_snapshot, renew_snapshot

VERSION_3_RANGES_PER_CHUNK = 8  # an export started as version 3 walks as it did (its rerun emits the same pages)

# Parts a row range is read in when its files are uploaded while the next part is read (an object store): two
# make a file per type of each half; more would overlap a little more for more, smaller files.
ROW_RANGE_UPLOAD_PARTS = 2
SUBSETTED = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "SUBSETTED",
    "display": "subsetted",
}


def fetch_resources(context: StepContext, sink: DataSink) -> int:
    """Walk the matching ids type by type, in id order, one page (= one chunk) at a time; with `_since`, the
    deleted ones too.

    The walk reads the store as it was at transactionTime, which nothing committed later changes: a rerun
    after a lost worker emits exactly the same pages as the first run, so the engine's chunk ids (by emission
    index) name the same pages, and the copies it already has are ignored.
    """
    job = ExportJob.from_parameters(context.parameters)
    _check_own_export(job.export_id, context.instance_id)
    keep_snapshot(job)
    patients = job.patients
    if job.level is Level.GROUP:  # read once: every page and file of blocks gets them from this walk
        patients = tuple(group_patient_ids_at(job.group_id, job.until))
    if job.row_ranges:
        # Row ranges per fetch chunk (`pages_per_chunk`), which `expand` splits into one write chunk each: a chunk
        # costs the engine a claim and a completion per step, most of the pass-through step's time, and the gate
        # holds every write until the last expand chunk is done (a 1M export: 13 chunks of 8 ranges before its
        # first file, 1 of 128). The first range is narrow (`first_range_rows`): its files are written first.
        ranges = iter_row_ranges(until=job.until, width=job.chunk_size, first_width=job.first_range_rows)
        while batch := list(islice(ranges, job.pages_per_chunk or VERSION_3_RANGES_PER_CHUNK)):
            sink.accept({"row_ranges": batch})
        return 0  # bounds only: the resources are counted where they are read, in write-to-binaries
    fetched = 0
    pages = _patient_pages(job, patients) if job.organize_output_by else iter(())
    while batch := list(islice(pages, job.pages_per_chunk or 1)):  # split again by `expand`: one write chunk each
        packed = [pack("\n".join(page)) for page in batch]
        sink.accept({"patient_pages": packed} if job.pages_per_chunk else {"patients_zlib": packed[0]})
        fetched += sum(len(page) for page in batch)
    for resource_type in () if job.organize_output_by else job.types:
        filters = type_filters_for(resource_type, job.type_filters)
        if job.level is Level.SYSTEM and not filters:
            for after, last, count in iter_resource_id_ranges(
                resource_type, since=job.since, until=job.until, page_size=job.chunk_size
            ):
                sink.accept({"type": resource_type, "after": after, "last": last, "count": count})
                fetched += count
            continue
        pages = id_pages(
            resource_type,
            level=job.level,
            patients=patients,
            since=job.since,
            until=job.until,
            filters=filters,
            page_size=job.chunk_size,
        )
        for ids in pages:
            sink.accept({"type": resource_type, "ids_zlib": pack("\n".join(ids))})
            fetched += len(ids)
    if job.associated_data:
        for ids in associated_provenance_pages(
            associated_data=job.associated_data,
            types=job.types,
            level=job.level,
            patients=patients,
            since=job.since,
            until=job.until,
            type_filters=job.type_filters,
            page_size=job.chunk_size,
        ):
            sink.accept({"type": "Provenance", "ids_zlib": pack("\n".join(ids))})
            fetched += len(ids)
    if job.since is not None and (job.level is not Level.GROUP or patients):
        for resource_type in job.types:
            for ids in iter_deleted_id_pages(resource_type, since=job.since, until=job.until, page_size=job.chunk_size):
                if job.level is not Level.SYSTEM:  # those that were in the compartments (of any Patient: None)
                    ids = deleted_in_compartments(resource_type, ids, patients or None, until=job.until)
                if ids:
                    sink.accept({"type": resource_type, "ids_zlib": pack("\n".join(ids)), "deleted": True})
                    fetched += len(ids)
    return fetched


def _patient_pages(job: ExportJob, patients: Sequence[str]) -> Iterator[list[str]]:
    """The Patients whose blocks an export organized by Patient writes, `patients_per_file` at a time: the
    listed patients or the Group's members, or every Patient of the store (as of `until`)."""
    if job.level is Level.GROUP or (job.level is Level.PATIENT and patients):
        ordered = iter(sorted(patients))
        while page := list(islice(ordered, job.patients_per_file)):
            yield page
        return
    yield from iter_resource_id_pages("Patient", until=job.until, page_size=job.patients_per_file)


def keep_snapshot(job: ExportJob) -> None:
    """Renew the export's snapshot hold (taken at the kick-off) as each chunk starts, so that expunges keep off
    its types for as long as it runs. A hold that lapsed (no chunk ran for SNAPSHOT_HOLD_SECONDS: the export
    waited that long for a worker) may have let an expunge remove what existed at transactionTime: the export
    fails rather than deliver files that may silently miss resources."""
    if not renew_snapshot(job.export_id):
        message = (
            "the export waited so long that its snapshot of the store lapsed: resources deleted for good since "
            "its transactionTime could be missing; kick off a new export"
        )
        BulkExport.objects.filter(id=job.export_id).update(failure=message)
        raise JobFailed(message)


def hold_again(restarted: RestartedJob) -> None:
    """A failed or cancelled export restarted: it released its hold when it stopped. It holds its types again as
    of its transactionTime; when an expunge removed some of them since, the hold is taken lapsed and the export's
    next chunk fails saying so (`keep_snapshot`), rather than deliver files that may miss resources."""
    job = ExportJob.from_parameters(restarted.parameters)
    with transaction.atomic():
        hold_snapshot_again(
            job.export_id,
            read_types(job.level, job.types, job.associated_data),
            datetime.fromisoformat(job.transaction_time),
        )


def release_hold(ended: CompletedJob | StoppedJob) -> None:
    """The export ended (completed, failed or cancelled): expunges over its types may go on."""
    release_snapshot(uuid.UUID(str(ended.parameters["export_id"])))


def _check_own_export(export_id: uuid.UUID, instance_id: uuid.UUID) -> None:
    """The job writes only the export row `kick_off` created with this very job: a job started by hand with
    another user's export id fails instead of filling that export with what it selects."""
    owner_job = BulkExport.objects.filter(id=export_id).values_list("job_instance_id", flat=True).first()
    if owner_job is None:
        raise JobCancelled(f"export {export_id} was deleted")
    if owner_job != instance_id:
        raise JobFailed(
            f"export {export_id} belongs to another job: a BULK_EXPORT job writes only the export it was started for"
        )


def expand_resources(context: StepContext, sink: DataSink) -> int:
    """The chunk's bodies as they were at transactionTime, as NDJSON, subsetted by `_elements`; deletions as
    the spec's transaction Bundles with a DELETE entry.

    A range of ids exported whole goes on as it is: `write-to-binaries` streams its bodies from the database
    into the file, so they cross the database once, as text, and are never parsed.
    """
    job = ExportJob.from_parameters(context.parameters)
    keep_snapshot(job)
    if "row_ranges" in context.data:  # rows are taken whole: one write chunk per range, nothing to load
        for after, last in context.data["row_ranges"]:
            sink.accept({"after_row": after, "last_row": last})
        return 0
    if "patient_pages" in context.data:  # Patient blocks: `write-to-binaries` reads each page into a file
        for packed in context.data["patient_pages"]:
            sink.accept({"patients_zlib": packed})
        return 0
    if "patients_zlib" in context.data:  # a page of version 3, one to a fetch chunk
        sink.accept(dict(context.data))
        return 0
    resource_type = context.data["type"]
    elements = elements_of(resource_type, job.elements)
    if "last" in context.data:
        if not elements:
            sink.accept(dict(context.data))
            return context.data["count"]
        _, ndjson = range_bodies_ndjson(
            resource_type, context.data["after"], context.data["last"], since=job.since, until=job.until
        )
        lines = ndjson.decode().splitlines()
    elif context.data.get("deleted"):
        ids = unpack(context.data["ids_zlib"]).decode().split("\n")
        lines = [deletion_bundle(resource_type, logical_id) for logical_id in ids]
        sink.accept(
            {"type": resource_type, "ndjson_zlib": pack("\n".join(lines) + "\n"), "count": len(lines), "deleted": True}
        )
        return len(lines)
    else:
        ids = unpack(context.data["ids_zlib"]).decode()  # "": an empty page of a fixed range (see `id_pages`)
        lines = current_bodies_json(resource_type, ids.split("\n"), until=job.until) if ids else []
    if elements:
        lines = [subset(line, elements) for line in lines]
    if lines:
        sink.accept({"type": resource_type, "ndjson_zlib": pack("\n".join(lines) + "\n"), "count": len(lines)})
    return len(lines)


def deletion_bundle(resource_type: str, logical_id: str) -> str:
    """One line of a `deleted` file: "a FHIR Bundle with a type of transaction", its entry a DELETE request."""
    return json.dumps(
        {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [{"request": {"method": "DELETE", "url": f"{resource_type}/{logical_id}"}}],
        },
        separators=(",", ":"),
    )


def elements_of(resource_type: str, elements: Iterable[str]) -> frozenset[str]:
    """The `_elements` that apply to a type; empty: the type is exported whole."""
    kept = set()
    for element in elements:
        prefix, _, name = element.rpartition(".")
        if not prefix or prefix == resource_type:
            kept.add(name)
    return frozenset(kept)


def subset(line: str, elements: frozenset[str]) -> str:
    body = json.loads(line)
    kept = {name: value for name, value in body.items() if name in elements or name in ALWAYS_KEPT_ELEMENTS}
    meta = dict(kept.get("meta") or {})
    meta["tag"] = [*meta.get("tag", []), SUBSETTED]
    kept["meta"] = meta
    return json.dumps(kept, separators=(",", ":"), ensure_ascii=False)


def write_to_binaries(context: StepContext, sink: DataSink) -> int:
    """One NDJSON file per chunk (per type of a row range) in the export storage, and its `ExportFile` row."""
    job = ExportJob.from_parameters(context.parameters)
    keep_snapshot(job)
    if "last_row" in context.data:
        parts = row_range_parts(job, context.chunk_id, context.data["after_row"], context.data["last_row"])
        deleted = False
    elif "patients_zlib" in context.data:
        count, content = patient_blocks_ndjson(job, unpack(context.data["patients_zlib"]).decode().split("\n"))
        parts = [[("Patient", uuid.uuid5(context.chunk_id, "file"), count, content)] if count else []]
        deleted = False
    else:
        deleted = bool(context.data.get("deleted"))
        resource_type, count = ("Bundle" if deleted else context.data["type"]), context.data["count"]
        if "last" in context.data:
            count, content = range_bodies_ndjson(
                resource_type, context.data["after"], context.data["last"], since=job.since, until=job.until
            )
        else:
            content = unpack(context.data["ndjson_zlib"])
        parts = [[(resource_type, uuid.uuid5(context.chunk_id, "file"), count, content)] if count else []]
    files = []
    with file_writer() as writer:  # every file whole before any row names it
        for contents in parts:
            context.check_cancelled()  # a cancelled or deleted export writes nothing more
            for resource_type, file_id, count, content in contents:
                path = new_file_path(job.export_id, resource_type, file_id)
                writer.write(path, content)
                files.append(
                    ExportFile(
                        id=file_id,
                        export_id=job.export_id,
                        job_instance_id=context.instance_id,
                        resource_type=resource_type,
                        path=path,
                        count=count,
                        deleted=deleted,
                    )
                )
    if not files:
        return 0
    with transaction.atomic():
        # The export row lock orders this against a DELETE of the export: either the DELETE sees these
        # files' rows (and removes the files), or this step sees the export gone (and removes them itself).
        # A key-share lock: the write steps of one export running at once do not wait for each other.
        if not _export_key_share_locked(job.export_id):
            delete_files([file.path for file in files])
            raise JobCancelled(f"export {job.export_id} was deleted")
        # A rerun's files replace those of the earlier run: their rows now name the new, whole files.
        replaced = list(ExportFile.objects.filter(id__in=[file.id for file in files]).values_list("path", flat=True))
        ExportFile.objects.bulk_create(
            files, update_conflicts=True, unique_fields=["id"], update_fields=["resource_type", "path", "count"]
        )
    delete_files(replaced)
    for file in files:
        sink.accept({"file": str(file.id), "type": file.resource_type, "count": file.count, "deleted": deleted})
    return sum(file.count for file in files)


def row_range_parts(
    job: ExportJob, chunk_id: uuid.UUID, after: int, last: int
) -> Iterator[list[tuple[str, uuid.UUID, int, bytes]]]:
    """The files of a row range, `(type, file id, count, NDJSON)`, a part of the range at a time: one file per type
    of each part.

    With BULK_EXPORT_UPLOAD_WHILE_READING (an object store) the range is read in ROW_RANGE_UPLOAD_PARTS parts, so
    that the upload of one part's files (in the background, `FileWriter`) overlaps the reading of the next; else in
    one. The first part's file ids are those of a range read whole, and every part's bounds follow from the range
    alone: a rerun writes the same files under the same ids."""
    parts = ROW_RANGE_UPLOAD_PARTS if settings.BULK_EXPORT_UPLOAD_WHILE_READING else 1
    bounds = [after + (last - after) * part // parts for part in range(parts + 1)]
    for part, (part_after, part_last) in enumerate(pairwise(bounds)):
        suffix = f"/{part}" if part else ""
        yield [
            (resource_type, uuid.uuid5(chunk_id, f"file/{resource_type}{suffix}"), count, ndjson)
            for resource_type, count, ndjson in row_range_bodies_ndjson(
                job.types, part_after, part_last, until=job.until
            )
        ]


def patient_blocks_ndjson(job: ExportJob, patient_ids: Sequence[str]) -> tuple[int, bytes]:
    """The blocks of these patients (`organizeOutputBy=Patient`), in their order, as NDJSON, and its resources.

    The count leaves the headers out: a manifest's `count` is the file's resources, and SMART's bulk-data-client
    and reference server take a header for no resource (the client refuses a file whose count includes them).

    A block is a header `Parameters` (`header`: a reference to the Patient), then the Patient, then the resources
    of its compartment that the export takes, type by type in name order, each in id order: what the export
    would take by type (`_type`, `_since`, `_typeFilter`, `_elements`, as of `until`), grouped by patient. A
    resource in several compartments is in each of their blocks (the IG allows it). A patient with nothing
    to export has no block. A few queries for all the patients of the file: one for their compartments'
    reference rows, two per type present (which of those resources the export takes, their bodies by row id),
    and one for the resources deleted since `until` (transactionTime or `_until`) that were in the blocks then.
    """
    blocks: dict[str, list[str]] = {patient_id: [] for patient_id in patient_ids}
    filters = {resource_type: type_filters_for(resource_type, job.type_filters) for resource_type in job.types}
    members = compartment_members(patient_ids, filters, since=job.since, until=job.until)
    if "Patient" in job.types:  # the Patient first in its block
        selected = current_resources("Patient", since=job.since, until=job.until, filters=filters["Patient"])
        members = {
            "Patient": [
                Member(patient_id, patient_id, row_id)
                for patient_id, row_id in selected.filter(logical_id__in=patient_ids).values_list("logical_id", "pk")
            ],
            **members,
        }
    for resource_type, type_members in members.items():
        bodies = bodies_json_by_row_id({member.row_id for member in type_members}, until=job.until)
        elements = elements_of(resource_type, job.elements)
        for patient_id, _, row_id in type_members:
            if (body := bodies.get(row_id)) is not None:
                blocks[patient_id].append(subset(body, elements) if elements else body)
    lines = []
    for patient_id in patient_ids:
        if blocks[patient_id]:
            lines.append(block_header(patient_id))
            lines.extend(blocks[patient_id])
    resources = sum(len(block) for block in blocks.values())
    return resources, ("\n".join(lines) + "\n").encode() if lines else b""


def block_header(patient_id: str) -> str:
    """The line that starts a Patient block: a `Parameters` with a `header` reference to the Patient."""
    return json.dumps(
        {
            "resourceType": "Parameters",
            "parameter": [{"name": "header", "valueReference": {"reference": f"Patient/{patient_id}"}}],
        },
        separators=(",", ":"),
    )


def _export_key_share_locked(export_id: uuid.UUID) -> bool:
    """Lock the export row against its deletion (FOR KEY SHARE) for this transaction; False when it is gone."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT FROM {BulkExport._meta.db_table} WHERE id = %s FOR KEY SHARE", [export_id])
        return cursor.fetchone() is not None


def create_report(context: StepContext, inputs: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The manifest: per type its files' URLs and counts; the files expire BULK_EXPORT_RETENTION_SECONDS from now."""
    job = ExportJob.from_parameters(context.parameters)
    files_by_type: dict[str, list[dict[str, Any]]] = defaultdict(list)
    deleted: list[dict[str, Any]] = []
    for item in inputs:
        file = {"type": item["type"], "url": f"{job.base_url}/$export-file/{item['file']}", "count": item["count"]}
        if item.get("deleted"):
            deleted.append(file)
        elif job.organize_output_by:  # files of blocks hold many types: the IG leaves `type` out
            files_by_type[""].append({"url": file["url"], "count": file["count"]})
        else:
            files_by_type[item["type"]].append(file)
    with connection.cursor() as cursor:  # the database's clock: every host stamps the same way
        cursor.execute("SELECT now() + make_interval(secs => %s)", [settings.BULK_EXPORT_RETENTION_SECONDS])
        [expires_at] = cursor.fetchone()
    ExportFile.objects.filter(export_id=job.export_id).update(expires_at=expires_at)
    BulkExport.objects.filter(id=job.export_id).update(expires_at=expires_at)
    organized = {"outputOrganizedBy": job.organize_output_by} if job.organize_output_by else {}
    return {
        "transactionTime": job.transaction_time,
        "request": job.request_url,
        "requiresAccessToken": True,
        **organized,
        "output": [file for resource_type in sorted(files_by_type) for file in files_by_type[resource_type]],
        "deleted": deleted,
        "error": [],
    }
