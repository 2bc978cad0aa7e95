"""The steps of the BULK_IMPORT job, written against the batch job-author API only.

list-files → fetch-files → load-resources → load-deferred → report, gated:
- `list-files` emits one chunk per input (reading the Bulk Data manifest, when given one), so that inputs
  are fetched in parallel.
- `fetch-files` streams its one input (a `$bulk-submit`'s encrypted file decrypted as it arrives), splits it
  into chunks of `chunk_size` lines (compressed), and notes its ids for `urn:uuid:` references; the gate
  makes every input's ids staged before any chunk loads. A source that fails is read again with backoff for
  BULK_IMPORT_SOURCE_RETRY_SECONDS (a proxy restart fits), resuming after the last line emitted, while the job
  page says the chunk waits for it; emitted chunks have ids derived from their input chunk and position, so a
  rerun of the chunk does not duplicate them.
- `load-resources` loads one chunk (see `loader`), records its bad lines, and passes on the lines whose
  conditional references found nothing yet, with its counts; a chunk that has none emits nothing and keeps
  its counts in a `LoadSummary` row.
- `load-deferred` loads those once every chunk has loaded: the order of the files does not matter.
- `report` adds up the counts (those passed on and the rows) and drops the staged ids.
A rerun of a load chunk writes the same resources again, which changes nothing (unchanged content makes
no new version), and replaces its issues.
"""

from __future__ import annotations

import itertools
import logging
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from django.conf import settings
from django.db import transaction

from batch.api import CompletedJob, DataSink, JobCancelled, JobFailed, RestartedJob, StepContext, StoppedJob
from fhirjobs.bulkimport.encryption import FileDecryptionFailed, InvalidFileKey, decrypted, file_key
from fhirjobs.bulkimport.exceptions import InvalidImportRequest, SourceUnavailable
from fhirjobs.bulkimport.loader import (
    ChunkOutcome,
    SourceLine,
    drop_staged_ids,
    load_lines,
    merge_summaries,
    stage_ids,
)
from fhirjobs.bulkimport.models import BulkImport, ImportIssue, LoadSummary
from fhirjobs.bulkimport.sources import Line, check_source, inflated, lines, open_blocks, redacted
from fhirjobs.bulkimport.undo import undo_replaced
from fhirjobs.common.chunks import pack, unpack
from fhirstore.authority import MANAGE_PERMISSION, WriteAuthority
from fhirstore.loading import LOAD_ORDER
from fhirstore.resource_types import RESOURCE_TYPES
from fhirstore.snapshots import hold_against_expunges, release_snapshot, renew_snapshot

logger = logging.getLogger(__name__)

RETRY_BACKOFF_SECONDS = 1.0  # the first wait before reading a failed source again; doubled each time,
MAX_RETRY_WAIT_SECONDS = 10.0  # up to this: a source back up is read again within 10 s
MAX_MANIFEST_BYTES = 16 * 1024 * 1024

SayWaiting = Callable[..., None]  # StepContext.say_waiting: (reason or None, for_seconds)


def list_files(context: StepContext, sink: DataSink) -> int:
    """One chunk per input (the inputs a Bulk Data manifest lists too): each is fetched by its own chunk of
    `fetch-files`, so several worker processes split files at once. Returns the number of inputs."""
    inputs = _inputs(context, _reading(context))
    for item in inputs:
        sink.accept({"url": item["url"]})
    return len(inputs)


def fetch_file(context: StepContext, sink: DataSink) -> int:
    """Split one input into chunks of `chunk_size` lines, noting its ids for `urn:uuid:` references; the job is
    gated, so every input's ids are staged before any chunk loads."""
    return _split(
        context, sink, _import_id(context), context.data["url"], _reading(context), context.parameters["chunk_size"]
    )


def fetch_files(context: StepContext, sink: DataSink) -> int:
    """Version 1's first step, every input split in one chunk: kept for imports started before version 2."""
    import_id = _import_id(context)
    reading = _reading(context)
    return sum(
        _split(context, sink, import_id, item["url"], reading, context.parameters["chunk_size"])
        for item in _inputs(context, reading)
    )


def _inputs(context: StepContext, reading: Reading) -> list[dict[str, str]]:
    inputs = list(context.parameters["inputs"])
    if context.parameters.get("manifest_url"):
        inputs += manifest_inputs(context.parameters["manifest_url"], reading, context.say_waiting)
    inputs.sort(key=_reference_rank)  # fewer conditional references wait for load-deferred; the order stays fixed
    return inputs


def _split(
    context: StepContext, sink: DataSink, import_id: uuid.UUID, url: str, reading: Reading, chunk_size: int
) -> int:
    """Each line read is progress: a large input streamed slowly but steadily is not taken as hung at the
    job's maximum run time (`max_chunk_seconds`), only a source that stops sending; while the source is down,
    the job page says so (`say_waiting`)."""
    fetched = 0
    batch: list[Line] = []
    for line in read_lines(url, reading, context.say_waiting):
        context.report_progress()
        batch.append(line)
        if len(batch) >= chunk_size:
            fetched += _emit(sink, import_id, url, batch)
            batch = []
    if batch:
        fetched += _emit(sink, import_id, url, batch)
    return fetched


def _reference_rank(item: Mapping[str, str]) -> int:
    """Referenced types (Organization, Practitioner, …) first: by the input's type, else its file name."""
    resource_type = item.get("type") or item["url"].rsplit("/", 1)[-1].split(".")[0]
    return LOAD_ORDER.index(resource_type) if resource_type in LOAD_ORDER else len(LOAD_ORDER)


@dataclass(frozen=True)
class Reading:
    """How the import's sources are read: the headers sent with every fetch, and the key of a submission's
    encrypted files (`encryption`)."""

    headers: Mapping[str, str] = field(default_factory=dict)
    file_key: bytes | None = field(default=None, repr=False)


def _reading(context: StepContext) -> Reading:
    """JobFailed when the import's fileEncryptionKey does not open here: this host's
    BULK_SUBMIT_FILE_DECRYPTION_JWK is not the one the kick-off opened it with."""
    row = _import_row(context)
    if not row.file_encryption_key:
        return Reading(row.request_headers)
    try:
        return Reading(row.request_headers, file_key(row.file_encryption_key))
    except InvalidFileKey as error:
        raise JobFailed(f"{error} (on host {socket.gethostname()}); nothing of this import was loaded") from None


def _emit(sink: DataSink, import_id: uuid.UUID, url: str, batch: list[Line]) -> int:
    stage_ids(import_id, (line.content for line in batch if not line.too_long))
    sink.accept(
        {
            "file": redacted(url),
            "first_line": batch[0].number,
            "lines_zlib": pack(b"\n".join(line.content for line in batch)),
            "too_long": [line.number for line in batch if line.too_long],
        }
    )
    return len(batch)


def read_lines(url: str, reading: Reading, say_waiting: SayWaiting) -> Iterator[Line]:
    """The lines of one source, decrypted as they stream when it is a submission's encrypted file (one that does
    not decrypt fails the import here, before anything loads: the job is gated). After a retryable failure
    (network, 5xx, 429) it is read again, resuming after the last line yielded, with doubling waits (up to
    MAX_RETRY_WAIT_SECONDS) for as long as BULK_IMPORT_SOURCE_RETRY_SECONDS since it first failed, so a proxy
    restart fails nothing; each wait is said (`say_waiting`: the job page's "waiting for"). Lines read again
    restart that window. JobFailed when the
    source cannot be read."""
    window = settings.BULK_IMPORT_SOURCE_RETRY_SECONDS
    done, attempts, failing_since = 0, 0, None
    try:
        while True:
            attempts += 1
            try:
                with open_blocks(url, reading.headers) as blocks:
                    if reading.file_key is not None:
                        blocks = decrypted(inflated(blocks), reading.file_key, source=redacted(url))
                    for line in lines(blocks, source=redacted(url)):
                        if line.number > done:
                            if failing_since is not None:
                                failing_since, attempts = None, 1
                                say_waiting(None)
                            done = line.number
                            yield line
                return
            except InvalidImportRequest as error:  # a redirect out of the allow-list: no point in retrying
                raise JobFailed(f"Could not read {redacted(url)}: {error.message}") from None
            except SourceUnavailable as error:
                if isinstance(error, FileDecryptionFailed) and not error.retryable:  # a cut-off file is read again
                    raise JobFailed(
                        f"Could not decrypt {redacted(url)}: {error.reason}; nothing of this import was loaded"
                    ) from None
                now = time.monotonic()
                failing_since = now if failing_since is None else failing_since
                left = failing_since + window - now
                if not error.retryable or left <= 0:
                    tried = f"{attempts} attempt{'s' if attempts > 1 else ''}"
                    over = f" over {now - failing_since:.0f} s" if attempts > 1 else ""
                    raise JobFailed(
                        f"Could not read {redacted(url)}: {error.reason} (after {tried}{over}; "
                        f"BULK_IMPORT_SOURCE_RETRY_SECONDS={window:g})"
                    ) from None
                wait = min(RETRY_BACKOFF_SECONDS * 2 ** (attempts - 1), MAX_RETRY_WAIT_SECONDS, left)
                logger.warning("reading %s failed (%s); trying again in %.1f s", redacted(url), error, wait)
                say_waiting(
                    f"waiting for the source {redacted(url)}, unavailable for {now - failing_since:.0f} s "
                    f"({error.reason}): attempt {attempts + 1} in {wait:.0f} s, giving up {left:.0f} s from "
                    f"now (BULK_IMPORT_SOURCE_RETRY_SECONDS={window:g})",
                    wait + MAX_RETRY_WAIT_SECONDS,
                )
                time.sleep(wait)
    finally:
        if failing_since is not None:
            say_waiting(None)


def manifest_inputs(url: str, reading: Reading, say_waiting: SayWaiting) -> list[dict[str, str]]:
    """The `output` files of a Bulk Data export manifest and of the pages its `link` `next` chain names (STU3's
    paged manifests), each checked against the allow-list."""
    outputs: list[dict[str, str]] = []
    page: str | None = url
    seen: set[str] = set()
    while page is not None:
        if page in seen:
            raise JobFailed(f"The manifest {redacted(url)} links back to its page {redacted(page)}")
        seen.add(page)
        manifest = _manifest_page(page, reading, say_waiting)
        try:
            outputs += [{"type": str(item.get("type", "")), "url": str(item["url"])} for item in manifest["output"]]
            page = next(
                (str(link["url"]) for link in manifest.get("link") or [] if link.get("relation") == "next"), None
            )
        except (KeyError, TypeError, AttributeError):
            raise JobFailed(
                f"{redacted(page)} is not a Bulk Data manifest (JSON with an `output` list of {{type, url}})"
            ) from None
    for item in outputs:
        try:
            check_source(item["url"])
        except InvalidImportRequest as error:
            raise JobFailed(
                f"The manifest {redacted(url)} lists a file that may not be fetched: {error.message}"
            ) from None
    return outputs


def _manifest_page(url: str, reading: Reading, say_waiting: SayWaiting) -> dict:
    content = bytearray()
    for line in read_lines(url, reading, say_waiting):
        content += line.content + b"\n"
        if len(content) > MAX_MANIFEST_BYTES:
            raise JobFailed(f"The manifest {redacted(url)} is larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        manifest = orjson.loads(bytes(content))
    except orjson.JSONDecodeError:
        manifest = None
    if not isinstance(manifest, dict):
        raise JobFailed(f"{redacted(url)} is not a Bulk Data manifest (JSON with an `output` list of {{type, url}})")
    return manifest


def hold_types(import_id: uuid.UUID) -> None:
    """In the kick-off's transaction: the import holds every type against expunges until it ends (its files may
    hold any type, whatever type an input declares). A delete-expunge or `$expunge` page of a type waits while an
    import runs (`fhirjobs.common.snapshots`), as it waits for an export: it neither deletes resources the import
    is writing nor leaves the import's referrers dangling; it goes on once the import ended."""
    hold_against_expunges(import_id, RESOURCE_TYPES, "import")


def keep_hold(import_id: uuid.UUID) -> None:
    """As each load chunk starts: renew the hold; one that lapsed (no chunk for SNAPSHOT_HOLD_SECONDS) is taken
    again. Nothing the import wrote before is at stake: an expunge meanwhile only ran earlier than it could."""
    if not renew_snapshot(import_id):
        with transaction.atomic():
            hold_types(import_id)


def release_types(ended: CompletedJob | StoppedJob) -> None:
    """The import ended (completed, failed or cancelled): expunges may go on."""
    release_snapshot(uuid.UUID(str(ended.parameters["import_id"])))


def hold_types_again(restarted: RestartedJob) -> None:
    """A failed or cancelled import restarted: it writes again, so it holds again."""
    with transaction.atomic():
        hold_types(uuid.UUID(str(restarted.parameters["import_id"])))


def load_resources(context: StepContext, sink: DataSink) -> int:
    """Load one chunk; its bad lines become issues, lines waiting for a conditional target go on."""
    keep_hold(_import_id(context))
    data = _chunk_data(context)
    too_long = set(data["too_long"])
    source_lines = [
        SourceLine(data["file"], number, None if number in too_long else content)
        for number, content in enumerate(unpack(data["lines_zlib"]).split(b"\n"), data["first_line"])
    ]
    row = _import_row(context)
    outcome = load_lines(
        source_lines,
        import_id=row.id,
        authority=_authority(row),
        defer_unresolved=True,
        record_writes=row.submission_id is not None,
    )
    _record_issues(context, outcome)
    deferred = [[line.file, line.number, line.content.decode()] for line in outcome.deferred]
    if not deferred:  # nothing for load-deferred to do: no chunk, the report reads the summary from its row
        LoadSummary.objects.update_or_create(
            chunk_id=context.chunk_id, defaults={"import_id": _import_id(context), "summary": outcome.summary()}
        )
        return len(source_lines)
    LoadSummary.objects.filter(chunk_id=context.chunk_id).delete()  # an earlier run of the chunk deferred nothing
    sink.accept(
        {
            "load_chunk": str(context.chunk_id),
            "summary": outcome.summary(),
            "deferred_zlib": pack(orjson.dumps(deferred)),
        }
    )
    return len(source_lines)


def load_deferred(context: StepContext, sink: DataSink) -> int:
    """The chunk's lines whose conditional references matched nothing before every chunk had loaded."""
    keep_hold(_import_id(context))
    if "load_chunk" in _chunk_data(context):  # absent from chunks emitted before LoadSummary rows existed
        # A run of the load chunk that deferred nothing may have followed one whose chunk for this step was
        # written already (the sink flushes large chunks early): this chunk carries the counts, not both.
        LoadSummary.objects.filter(chunk_id=context.data["load_chunk"]).delete()
    summaries = [context.data["summary"]]
    count = 0
    if context.data["deferred_zlib"]:  # None in chunks emitted before LoadSummary rows existed
        deferred = orjson.loads(unpack(context.data["deferred_zlib"]))
        row = _import_row(context)
        outcome = load_lines(
            (SourceLine(file, number, content.encode()) for file, number, content in deferred),
            import_id=row.id,
            authority=_authority(row),
            record_writes=row.submission_id is not None,
        )
        _record_issues(context, outcome)
        summaries.append(outcome.summary())
        count = len(deferred)
    sink.accept({"summary": merge_summaries(summaries)})
    return count


def report(context: StepContext, inputs: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Counts per type (loaded / unchanged / failed), warnings, and where the rejected lines are."""
    import_id = _import_id(context)
    loaded_alone = LoadSummary.objects.filter(import_id=import_id).values_list("summary", flat=True)
    merged = merge_summaries(itertools.chain((item["summary"] for item in inputs), loaded_alone.iterator()))
    if BulkImport.objects.filter(id=import_id, replaces__isnull=False).exists():
        # Every line loaded: what only the replaced manifest brought can go. Its staged ids tell the undo what
        # this import brings; the undo drops them. Started here, not once the job completed, so that the
        # submission's status never shows this import done without the undo (a rerun starts none again).
        undo_replaced(import_id)
    else:
        drop_staged_ids(import_id)
    errors = ImportIssue.objects.filter(import_id=import_id).count()
    totals = {
        kind: sum(counts[kind] for counts in merged["counts"].values()) for kind in ("loaded", "unchanged", "failed")
    }
    return {
        **merged,
        "totals": totals,
        "errors": errors,
        "error_file": f"{context.parameters['base_url']}/$import-errors/{import_id}" if errors else None,
    }


def _chunk_data(context: StepContext) -> Mapping[str, Any]:
    """A load chunk's data: None once discarded after the import failed or was cancelled (it held raw NDJSON,
    `services.discard_ended_import_data`), so a restart of such an import fails with the reason."""
    if context.data is None:
        raise JobFailed(
            "this import's data was discarded when it ended (it held the source's lines): it cannot be "
            "restarted where it stopped; start a new import"
        )
    return context.data


def _import_id(context: StepContext) -> uuid.UUID:
    return uuid.UUID(context.parameters["import_id"])


def _import_row(context: StepContext) -> BulkImport:
    """The job's own BulkImport row: the one `kick_off` created with this very job. A job started by hand with
    another import's id (its owner's credentials, its authority) fails instead; a deleted row cancels it."""
    row = BulkImport.objects.select_related("owner").filter(id=_import_id(context)).first()
    if row is None:
        raise JobCancelled(f"import {context.parameters['import_id']} was deleted")
    if row.job_instance_id != context.instance_id:
        raise JobFailed(
            f"import {row.id} belongs to another job: a BULK_IMPORT job loads only the import it was started for"
        )
    return row


def _authority(row: BulkImport) -> WriteAuthority:
    """The importer's authority: what the kick-off recorded, while the owner is still active and staff (or
    granted the permission); an import started from the shell (no owner) keeps what it recorded."""
    owner = row.owner
    still = owner is None or (owner.is_active and (owner.is_staff or owner.has_perm(MANAGE_PERMISSION)))
    return WriteAuthority(
        manages_search_parameters=row.manages_search_parameters and still, caller=owner.get_username() if owner else ""
    )


def _record_issues(context: StepContext, outcome: ChunkOutcome) -> None:
    import_id = _import_id(context)
    ImportIssue.objects.filter(chunk_id=context.chunk_id).delete()
    ImportIssue.objects.bulk_create(
        ImportIssue(
            import_id=import_id, chunk_id=context.chunk_id, file=issue.file, line=issue.line, message=issue.message
        )
        for issue in outcome.issues
    )
