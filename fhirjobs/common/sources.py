"""Reading the files a job is given by URL: which URLs may be fetched, and their bytes as a bounded stream.

Only URLs under a prefix of BULK_IMPORT_ALLOWED_SOURCES are fetched (no SSRF to internal addresses by
default: the list is empty), `file://` only under BULK_IMPORT_FILE_ROOT. A kick-off checks a source with the
settings of the host it arrives on, the fetching step again with those of the worker's host: every refusal and
every unreadable file names the host that looked and the setting it went by, so settings that differ between
hosts (which the start-up check warns of) show where. A URL cannot be bent out of its prefix: dot segments
(`..`, `%2e%2e`, which HTTP clients remove) are refused, and the prefix must end at a path segment boundary
(`/exports` admits `/exports/x`, not `/exports-internal/x`). A host name is resolved before each request and
refused when it leads to a loopback, private, link-local or otherwise non-public address, unless the allow-list
entry names that address itself (`http://10.0.0.5/…`); the connection then goes to the address checked (no
second lookup for DNS rebinding to change). Redirects are followed by hand so each target is checked like the
first URL, and `Authorization` / `Cookie` are not sent on to another origin (a presigned S3 URL refuses a
second auth mechanism anyway). Content is read block by block (gzip detected by its magic bytes and inflated on
the fly, in bounded pieces, every member of a multi-member file; a cut-off stream is an error to retry, never a
short file): a 1 GB file is never held in memory. Messages and httpx's request logs show URLs without their
query strings (`redacted`). The bulk import reads its
NDJSON through these (`fhirjobs.bulkimport.sources`), the terminology upload its distribution files.
"""

from __future__ import annotations

import ipaddress
import json
import logging
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
MAX_JSON_BYTES = 16 * 1024**2  # a manifest of ~50,000 files; OAuth metadata and token answers are a few KB
CREDENTIAL_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})  # not sent to another origin


class SourceNotAllowed(InvalidRequest):
    """The URL is not one this server may read (outside the allow-list, not http(s) or file)."""


class SourceUnavailable(Exception):
    """A source could not be read; `retryable` when trying again later may help (network, 5xx, 429).

    `reason` says why without the source (`HTTP 503`), for messages that name the source already."""

    def __init__(self, source: str, reason: str, *, retryable: bool):
        super().__init__(f"{source}: {reason}")
        self.reason = reason
        self.retryable = retryable


def redacted(url: str) -> str:
    """The URL as messages, logs and job errors may show it: without its query string (a presigned URL's
    signature is a credential), fragment and password."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2] if parts.password else parts.netloc
    return (
        parts._replace(netloc=netloc, query="<redacted>" if parts.query else "", fragment="")
        .geturl()
        .replace("?%3Credacted%3E", "?<redacted>")
    )


class _RedactedRequestLine(logging.Filter):
    """httpx logs each request at INFO with its full URL: the query string is cut from the record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redacted(str(arg)) if isinstance(arg, httpx.URL) else arg for arg in record.args)
        return True


logging.getLogger("httpx").addFilter(_RedactedRequestLine())


def check_source(url: str) -> None:
    """SourceNotAllowed unless `url` may be fetched (by its text: the address is checked when fetched)."""
    _allowed_prefix(url)


def _allowed_prefix(url: str) -> SplitResult | None:
    """The allow-list prefix `url` is under (None for a file URL); SourceNotAllowed when there is none."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        _file_path(url)
        return None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise SourceNotAllowed(f"{redacted(url)!r} is not an http(s) or file URL")
    segments = unquote(parts.path).replace("\\", "/").split("/")
    if any(segment in (".", "..") for segment in segments):
        raise SourceNotAllowed(f"{redacted(url)!r} has dot segments (. or ..); give the file's own path")
    for prefix in settings.BULK_IMPORT_ALLOWED_SOURCES:
        if _under(parts, urlsplit(prefix)):
            return urlsplit(prefix)
    raise SourceNotAllowed(
        f"{redacted(url)!r} is not under an allowed import source (BULK_IMPORT_ALLOWED_SOURCES on host "
        f"{socket.gethostname()}); nothing was fetched"
    )


def _under(url: SplitResult, prefix: SplitResult) -> bool:
    """Same scheme and host (userinfo included, so `https://allowed@evil/` is not `https://allowed/`), and a
    path under the prefix's at a segment boundary: `https://data.example.org` does not admit
    `https://data.example.org.evil.com`, `/exports` does not admit `/exports-internal/dump`."""
    if (url.scheme, url.netloc.lower()) != (prefix.scheme, prefix.netloc.lower()):
        return False
    path, base = unquote(url.path) or "/", unquote(prefix.path) or "/"
    return path.startswith(base) if base.endswith("/") else path == base or path.startswith(base + "/")


def _address(parts: SplitResult, prefix: SplitResult) -> str:
    """The IP address to connect to for this http(s) URL: its host resolved once, every address it resolves to
    public, or named itself by the allow-list entry the URL is under (`prefix`). SourceNotAllowed otherwise;
    SourceUnavailable (retryable) when the name does not resolve."""
    host = parts.hostname or ""
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        try:
            found = socket.getaddrinfo(
                host, parts.port or (443 if parts.scheme == "https" else 80), type=socket.SOCK_STREAM
            )
        except (socket.gaierror, UnicodeError) as error:
            raise SourceUnavailable(host, f"cannot be resolved ({error})", retryable=True) from None
        addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0].split("%")[0]) for info in found))
    named = ipaddress.ip_address(prefix.hostname) if _is_ip_literal(prefix.hostname) else None
    for address in addresses:
        if not address.is_global and address != named:
            raise SourceNotAllowed(
                f"{host} resolves to {address}, a loopback, private or link-local address; only an allow-list "
                "entry naming that address itself (BULK_IMPORT_ALLOWED_SOURCES) admits it"
            )
    return str(addresses[0])


def _is_ip_literal(host: str | None) -> bool:
    try:
        ipaddress.ip_address(host or "")
    except ValueError:
        return False
    return True


def _pinned(url: str, address: str) -> tuple[httpx.URL, dict[str, str], dict[str, str]]:
    """The request for `url` sent to `address`: the URL with the address as host, the original Host header,
    and for https the original name for SNI and certificate checks."""
    original = httpx.URL(url)
    target = original.copy_with(host=address)
    host_header = original.host if original.port is None else f"{original.host}:{original.port}"
    extensions = {"sni_hostname": original.host} if original.scheme == "https" else {}
    return target, {"Host": host_header}, extensions


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port or (443 if parts.scheme == "https" else 80)


def _file_path(url: str) -> Path:
    root = settings.BULK_IMPORT_FILE_ROOT
    if not root:
        raise SourceNotAllowed(
            f"file:// inputs are not allowed (BULK_IMPORT_FILE_ROOT is not set on host {socket.gethostname()})"
        )
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
            raise SourceUnavailable(
                redacted(url),
                f"{error.strerror or error} (looked for on host {socket.gethostname()}, "
                "under its BULK_IMPORT_FILE_ROOT)",
                retryable=False,
            ) from None
        with stream:
            yield iter(lambda: stream.read(READ_BLOCK), b"")
        return
    sent = dict(headers or {})
    origin = _origin(url)
    with httpx.Client(timeout=TIMEOUT, follow_redirects=False, trust_env=False) as client:
        for _ in range(MAX_REDIRECTS + 1):
            target, host, extensions = _pinned(url, _address(urlsplit(url), _allowed_prefix(url)))
            try:
                with client.stream("GET", target, headers={**sent, **host}, extensions=extensions) as response:
                    if response.is_redirect:
                        url = urljoin(url, response.headers.get("Location", ""))
                        check_source(url)  # a redirect may not lead outside the allow-list
                        if _origin(url) != origin:  # credentials stay with the origin they were given for
                            sent = {
                                name: value for name, value in sent.items() if name.lower() not in CREDENTIAL_HEADERS
                            }
                        continue
                    _check_status(url, response)
                    yield response.iter_raw(READ_BLOCK)
                    return
            except httpx.HTTPError as error:
                reason = f"{error.__class__.__name__}: {str(error).replace(url, redacted(url))}"
                raise SourceUnavailable(redacted(url), reason, retryable=True) from None
        raise SourceUnavailable(redacted(url), f"more than {MAX_REDIRECTS} redirects", retryable=False)


def read_json(url: str, headers: Mapping[str, str] | None = None) -> object:
    """A small JSON document (a manifest, OAuth metadata) read as a source is; SourceUnavailable when it cannot
    be read or is over MAX_JSON_BYTES, ValueError when it is not JSON."""
    content = bytearray()
    with open_blocks(url, headers) as blocks:
        for block in blocks:
            content += block
            if len(content) > MAX_JSON_BYTES:
                raise SourceUnavailable(redacted(url), f"larger than {MAX_JSON_BYTES} bytes", retryable=False)
    return json.loads(content)


def post_form(url: str, form: Mapping[str, str], headers: Mapping[str, str] | None = None) -> object:
    """POST a form to an allowed URL (an OAuth token endpoint), checked and pinned as a fetch is, no redirect
    followed; the JSON answer. SourceUnavailable for an answer other than 200, ValueError when not JSON."""
    check_source(url)
    if urlsplit(url).scheme not in ("http", "https"):
        raise SourceNotAllowed(f"{redacted(url)!r} is not an http(s) URL")
    target, host, extensions = _pinned(url, _address(urlsplit(url), _allowed_prefix(url)))
    try:
        with httpx.Client(timeout=TIMEOUT, follow_redirects=False, trust_env=False) as client:
            response = client.post(target, data=dict(form), headers={**(headers or {}), **host}, extensions=extensions)
    except httpx.HTTPError as error:
        raise SourceUnavailable(redacted(url), f"{error.__class__.__name__}: {error}", retryable=True) from None
    _check_status(url, response)
    if len(response.content) > MAX_JSON_BYTES:
        raise SourceUnavailable(redacted(url), f"larger than {MAX_JSON_BYTES} bytes", retryable=False)
    return response.json()


def _check_status(url: str, response: httpx.Response) -> None:
    if response.status_code == 200:
        return
    retryable = response.status_code >= 500 or response.status_code in (408, 429)
    raise SourceUnavailable(redacted(url), f"HTTP {response.status_code}", retryable=retryable)


def inflated(blocks: Iterator[bytes]) -> Iterator[bytes]:
    """The blocks as they are, or inflated when they start as gzip (whatever the name or Content-Type says).

    Every member of a multi-member gzip (`cat a.gz b.gz`, what parallel compressors write) is read. A stream
    that ends inside a member was cut off: SourceUnavailable (retryable), never a short file; bytes that are
    not gzip after a member, or corrupt data: SourceUnavailable (not retryable)."""
    first = next(blocks, b"")
    if not first.startswith(GZIP_MAGIC):
        if first:
            yield first
        yield from blocks
        return
    inflater, in_member = zlib.decompressobj(wbits=31), False
    try:
        for block in _chain(first, blocks):
            while block:
                in_member = True
                yield inflater.decompress(block, READ_BLOCK * 16)
                while inflater.unconsumed_tail:  # bounded output per call: a gzip bomb cannot blow up memory
                    yield inflater.decompress(inflater.unconsumed_tail, READ_BLOCK * 16)
                block = b""
                if inflater.eof:  # the member ended: what follows in this block starts the next one
                    block = inflater.unused_data
                    inflater, in_member = zlib.decompressobj(wbits=31), False
    except zlib.error as error:
        raise SourceUnavailable("the gzip stream", f"corrupt data: {error}", retryable=False) from None
    if in_member:
        raise SourceUnavailable(
            "the gzip stream", "it ends in the middle of a member: the file was cut off", retryable=True
        )


def _chain(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    yield first
    yield from rest
