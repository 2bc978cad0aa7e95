"""Reading import sources: which URLs may be fetched, and their NDJSON lines as a bounded stream.

Which URLs, and their bytes, are `fhirjobs.common.sources`' (the allow-list BULK_IMPORT_ALLOWED_SOURCES,
`file://` under BULK_IMPORT_FILE_ROOT, redirects checked, gzip inflated on the fly); a refused URL is an
InvalidImportRequest here. The bytes are split into lines no longer than BULK_IMPORT_MAX_LINE_BYTES, and
reading stops at BULK_IMPORT_MAX_FILE_BYTES: a 1 GB file is never held in memory.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from django.conf import settings

from fhirjobs.bulkimport.exceptions import InvalidImportRequest
from fhirjobs.common import sources as common_sources
from fhirjobs.common.sources import READ_BLOCK, SourceNotAllowed, SourceUnavailable, inflated, redacted

__all__ = ["READ_BLOCK", "Line", "check_source", "inflated", "lines", "open_blocks", "redacted"]


@dataclass(frozen=True)
class Line:
    """One line of a source: its 1-based number and bytes, or `too_long` (its bytes dropped)."""

    number: int
    content: bytes
    too_long: bool = False


def check_source(url: str) -> None:
    """InvalidImportRequest unless `url` may be fetched (`fhirjobs.common.sources.check_source`)."""
    try:
        common_sources.check_source(url)
    except SourceNotAllowed as error:
        raise InvalidImportRequest(error.message) from None


@contextmanager
def open_blocks(url: str, headers: Mapping[str, str] | None = None) -> Iterator[Iterator[bytes]]:
    """The raw bytes of a source, block by block; SourceUnavailable when it cannot be read, InvalidImportRequest
    when it (or a redirect) is not allowed."""
    try:
        with common_sources.open_blocks(url, headers) as blocks:
            yield blocks
    except SourceNotAllowed as error:
        raise InvalidImportRequest(error.message) from None


def lines(
    blocks: Iterator[bytes], *, source: str, max_line: int | None = None, max_bytes: int | None = None
) -> Iterator[Line]:
    """The NDJSON lines of a byte stream; a line longer than `max_line` comes as `too_long`.

    SourceUnavailable (not retryable) once more than `max_bytes` were read."""
    max_line = max_line or settings.BULK_IMPORT_MAX_LINE_BYTES
    max_bytes = max_bytes or settings.BULK_IMPORT_MAX_FILE_BYTES
    pending, pending_size, skipping, number, total = [], 0, False, 1, 0
    for block in inflated(blocks):
        total += len(block)
        if total > max_bytes:
            raise SourceUnavailable(
                source, f"larger than {max_bytes} bytes (BULK_IMPORT_MAX_FILE_BYTES)", retryable=False
            )
        start = 0
        while True:
            end = block.find(b"\n", start)
            if end < 0:
                rest = block[start:]
                if not skipping:
                    pending.append(rest)
                    pending_size += len(rest)
                    if pending_size > max_line:
                        pending, pending_size, skipping = [], 0, True
                break
            piece = block[start:end]
            if skipping or pending_size + len(piece) > max_line:
                yield Line(number, b"", too_long=True)
            else:
                yield Line(number, b"".join(pending) + piece if pending else piece)
            pending, pending_size, skipping, number, start = [], 0, False, number + 1, end + 1
    if skipping:
        yield Line(number, b"", too_long=True)
    elif pending_size:
        yield Line(number, b"".join(pending))
