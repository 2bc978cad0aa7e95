"""An upload's files as binary streams: a URL read block by block (the import's allow-list and gzip
inflation), or an inline file kept in the store until the upload has read it."""

from __future__ import annotations

import io
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import IO, Any

from batch.api import JobFailed, RetryChunkLater
from fhirjobs.common.sources import SourceNotAllowed, SourceUnavailable, inflated, open_blocks
from fhirstore.terminology.models import UploadedFile
from fhirstore.terminology.storage import uploaded_file

RETRY_UNAVAILABLE_SECONDS = 30


class BlockStream(io.RawIOBase):
    """A readable binary stream over an iterator of byte blocks (what `iterparse` and `csv` read)."""

    def __init__(self, blocks: Iterator[bytes]):
        self._blocks = blocks
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._pending:
            self._pending = next(self._blocks, b"")
            if not self._pending:
                return 0
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size


@contextmanager
def open_file(reference: Mapping[str, Any]) -> Iterator[IO[bytes]]:
    """The file as a buffered binary stream (inflated when gzipped). A source that cannot be read now is
    RetryChunkLater when retrying may help, else JobFailed."""
    if reference.get("stored"):
        try:
            content = uploaded_file(reference["stored"])
        except UploadedFile.DoesNotExist:
            raise JobFailed(f"{reference.get('name')}: the inline file is gone (the upload ended)") from None
        yield io.BufferedReader(BlockStream(inflated(iter([content]))))
        return
    try:
        with open_blocks(reference["url"]) as blocks:
            yield io.BufferedReader(BlockStream(inflated(blocks)), buffer_size=256 * 1024)
    except SourceNotAllowed as error:  # a redirect out of the allow-list
        raise JobFailed(error.message) from None
    except SourceUnavailable as error:
        if error.retryable:
            raise RetryChunkLater(RETRY_UNAVAILABLE_SECONDS) from error
        raise JobFailed(str(error)) from None
