"""The BULK_IMPORT job's steps run inline on local files, for `manage.py load_fhir` and the demo.

NDJSON files go through the import's own code: streamed in chunks, `urn:uuid:` and conditional references
resolved, unchanged resources left alone, a bad line reported with its file, line number and reason while the
load goes on. Bundle files are the store's (`fhirstore.loading`). This module builds on the store; the store
knows nothing of it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from fhirjobs.bulkimport.loader import ChunkOutcome, SourceLine, drop_staged_ids, load_lines, stage_ids
from fhirjobs.bulkimport.models import BulkImport
from fhirjobs.bulkimport.sources import READ_BLOCK, lines
from fhirstore.authority import SERVER
from fhirstore.loading import (
    LOAD_BATCH_SIZE,
    BadInput,
    LoadReport,
    is_ndjson,
    load_bundle_file,
    ordered_input_files,
)


def load_paths(
    paths: Iterable[str | Path], *, batch_size: int = LOAD_BATCH_SIZE, progress: Callable[[int], None] | None = None
) -> LoadReport:
    """Load NDJSON files, bundle files and directories of them; `progress` is told of the bytes consumed."""
    files = ordered_input_files(paths)
    report = LoadReport()
    load_ndjson_files([path for path in files if is_ndjson(path)], report, chunk_size=batch_size, progress=progress)
    for path in files:
        if not is_ndjson(path):
            load_bundle_file(path, report)
            if progress:
                progress(path.stat().st_size)
    return report


def load_ndjson_files(
    paths: Sequence[Path], report: LoadReport, *, chunk_size: int, progress: Callable[[int], None] | None = None
) -> None:
    """The same staging of ids, the same chunk loader, the same deferral of conditional references as the
    job's steps, without the batch engine's round trips; a shell command, so with the server's own authority
    (`authority.SERVER`).

    Files are streamed chunk by chunk; only the deferred lines (conditional references whose target is in a
    later file: rare, since files load in reference order) are held until the end.
    """
    import_id = BulkImport.objects.create(request_url="load_fhir").id  # known: the purge leaves its staged ids alone
    try:
        for path in paths:
            for chunk in _chunks(path, chunk_size):
                stage_ids(import_id, (line.content for line in chunk if line.content))
        outcome = ChunkOutcome()
        for path in paths:
            for chunk in _chunks(path, chunk_size):
                load_lines(chunk, import_id=import_id, authority=SERVER, defer_unresolved=True, outcome=outcome)
                if progress:
                    progress(sum(len(line.content or b"") + 1 for line in chunk))
        deferred, outcome.deferred = outcome.deferred, []
        for start in range(0, len(deferred), chunk_size):
            load_lines(deferred[start : start + chunk_size], import_id=import_id, authority=SERVER, outcome=outcome)
    finally:
        drop_staged_ids(import_id)
        BulkImport.objects.filter(id=import_id).delete()
    for resource_type, counts in outcome.counts.items():
        if counts["loaded"] + counts["unchanged"]:
            report.counts[resource_type] += counts["loaded"] + counts["unchanged"]
        if counts["unchanged"]:
            report.unchanged[resource_type] += counts["unchanged"]
    report.warnings.extend(outcome.warning_samples)
    report.bad.extend(BadInput(issue.file, issue.line, issue.message) for issue in outcome.issues)


def _chunks(path: Path, chunk_size: int) -> Iterator[list[SourceLine]]:
    chunk: list[SourceLine] = []
    with path.open("rb") as stream:
        for line in lines(iter(lambda: stream.read(READ_BLOCK), b""), source=str(path)):
            chunk.append(SourceLine(str(path), line.number, None if line.too_long else line.content))
            if len(chunk) >= chunk_size:
                yield chunk
                chunk = []
    if chunk:
        yield chunk
