"""Reading the files a job is given by URL: which URLs may be fetched, and their bytes as a bounded stream.

Only URLs under a prefix of BULK_IMPORT_ALLOWED_SOURCES are fetched (no SSRF to internal addresses by
default: the list is empty), `file://` only under BULK_IMPORT_FILE_ROOT. A kick-off checks a source with the
settings of the host it arrives on, the fetching step again with those of the worker's host: every refusal and
every unreadable file names the host that looked and the setting it went by, so settings that differ between
hosts (which the start-up check warns of) show where. Redirects are followed by hand so
each target is checked like the first URL. Content is read block by block (gzip detected by its magic bytes
and inflated on the fly, in bounded pieces): a 1 GB file is never held in memory. The bulk import reads its
NDJSON through these (`fhirjobs.bulkimport.sources`), the terminology upload its distribution files.
"""
from __future__ import annotations

import socket
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import SplitResult, unquote, urljoin, urlsplit

import httpx
from django.conf import settings

from fhirstore.exceptions import InvalidRequest

MAX_REDIRECTS = 5
READ_BLOCK = 256 * 1024
TIMEOUT = httpx.Timeout(30.0, connect=10.0)
GZIP_MAGIC = b"\x1f\x8b"


class SourceNotAllowed(InvalidRequest):
    """The URL is not one this server may read (outside the allow-list, not http(s) or file)."""


class SourceUnavailable(Exception):
    """A source could not be read; `retryable` when trying again later may help (network, 5xx, 429).

    `reason` says why without the source (`HTTP 503`), for messages that name the source already."""

    def __init__(self, source: str, reason: str, *, retryable: bool):
        super().__init__(f"{source}: {reason}")
        self.reason = reason
        self.retryable = retryable


def check_source(url: str) -> None:
    """SourceNotAllowed unless `url` may be fetched."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        _file_path(url)
        return
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise SourceNotAllowed(f"{url!r} is not an http(s) or file URL")
    if not any(_under(parts, urlsplit(prefix)) for prefix in settings.BULK_IMPORT_ALLOWED_SOURCES):
        raise SourceNotAllowed(f"{url!r} is not under an allowed import source (BULK_IMPORT_ALLOWED_SOURCES on "
                               f"host {socket.gethostname()}); nothing was fetched")


def _under(url: SplitResult, prefix: SplitResult) -> bool:
    """Same scheme and host (userinfo included, so `https://allowed@evil/` is not `https://allowed/`), and a
    path under the prefix's: `https://data.example.org` does not admit `https://data.example.org.evil.com`."""
    return (url.scheme, url.netloc.lower()) == (prefix.scheme, prefix.netloc.lower()) \
        and url.path.startswith(prefix.path)


def _file_path(url: str) -> Path:
    root = settings.BULK_IMPORT_FILE_ROOT
    if not root:
        raise SourceNotAllowed(f"file:// inputs are not allowed (BULK_IMPORT_FILE_ROOT is not set on host "
                               f"{socket.gethostname()})")
    path = Path(unquote(urlsplit(url).path)).resolve()
    if not path.is_relative_to(Path(root).resolve()):
        raise SourceNotAllowed(f"{url!r} is not under BULK_IMPORT_FILE_ROOT (on host {socket.gethostname()})")
    return path


@contextmanager
def open_blocks(url: str, headers: Mapping[str, str] | None = None) -> Iterator[Iterator[bytes]]:
    """The raw bytes of a source, block by block; SourceUnavailable when it cannot be read."""
    check_source(url)
    if urlsplit(url).scheme == "file":
        path = _file_path(url)
        try:
            stream = path.open("rb")
        except OSError as error:
            raise SourceUnavailable(url, f"{error.strerror or error} (looked for on host {socket.gethostname()}, "
                                    "under its BULK_IMPORT_FILE_ROOT)", retryable=False) from None
        with stream:
            yield iter(lambda: stream.read(READ_BLOCK), b"")
        return
    with httpx.Client(timeout=TIMEOUT, follow_redirects=False) as client:
        for _ in range(MAX_REDIRECTS + 1):
            try:
                with client.stream("GET", url, headers=dict(headers or {})) as response:
                    if response.is_redirect:
                        url = urljoin(url, response.headers.get("Location", ""))
                        check_source(url)  # a redirect may not lead outside the allow-list
                        continue
                    _check_status(url, response)
                    yield response.iter_raw(READ_BLOCK)
                    return
            except httpx.HTTPError as error:
                raise SourceUnavailable(url, f"{error.__class__.__name__}: {error}", retryable=True) from None
        raise SourceUnavailable(url, f"more than {MAX_REDIRECTS} redirects", retryable=False)


def _check_status(url: str, response: httpx.Response) -> None:
    if response.status_code == 200:
        return
    retryable = response.status_code >= 500 or response.status_code in (408, 429)
    raise SourceUnavailable(url, f"HTTP {response.status_code}", retryable=retryable)


def inflated(blocks: Iterator[bytes]) -> Iterator[bytes]:
    """The blocks as they are, or inflated when they start as gzip (whatever the name or Content-Type says)."""
    first = next(blocks, b"")
    if not first.startswith(GZIP_MAGIC):
        if first:
            yield first
        yield from blocks
        return
    inflater = zlib.decompressobj(wbits=31)
    for block in _chain(first, blocks):
        yield inflater.decompress(block, READ_BLOCK * 16)
        while inflater.unconsumed_tail:  # bounded output per call: a gzip bomb cannot blow up memory
            yield inflater.decompress(inflater.unconsumed_tail, READ_BLOCK * 16)
    yield inflater.flush()


def _chain(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    yield first
    yield from rest
