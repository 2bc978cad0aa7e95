"""`$bulk-submit` `fileEncryptionKey` (Bulk Data STU4 ballot): the provider encrypts the manifest and every file it
lists as a JWE, and delivers the key in the request as a JWE of its own, encrypted to this server's key.

Two layers:
- the key: `fileEncryptionKey.value`, a JWE in compact serialization encrypted to BULK_SUBMIT_FILE_DECRYPTION_JWK
  (this server's private key; the provider has its public half, as it has the submitter, out of band). Its
  payload is the file key: a JWK of `kty` `oct`, or the raw key bytes. It is opened by jwcrypto (a few hundred
  bytes), at kick-off to refuse a key that is not ours with a 400, and again by the worker that reads the files.
- the files: each a JWE in compact serialization, `alg` `dir` (the file key is the content key) or `A128KW` /
  `A192KW` / `A256KW` (it wraps the file's content key), `enc` `A128GCM` / `A192GCM` / `A256GCM`, `zip` `DEF`
  optional. The compact form puts the header, wrapped key and IV before the ciphertext, so a file is decrypted as
  it streams, block by block, in bounded memory: jwcrypto would hold the whole file (and its base64) at once.
  AES-GCM's tag comes last, so the lines of a file go on before it is checked; a file whose tag does not match
  (a wrong key, a changed file) fails the import in its fetch step, and the job is gated: no line of it, or of
  any other file of the import, has been loaded by then.

The stored key is the JWE as given (only this server's private key opens it), kept with the import's source
credentials and forgotten with them (`services.discard_ended_import_data`); it is never logged, and never in the
job's parameters, which the control API shows.
"""

from __future__ import annotations

import base64
import json
import zlib
from collections.abc import Iterable, Iterator

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap
from django.conf import settings
from jwcrypto import jwe, jwk
from jwcrypto.common import JWException

from fhirjobs.common.sources import READ_BLOCK, SourceUnavailable

FILE_ENCRYPTION_SYSTEMS = (  # the ballot names the value set as the system; its code system is accepted too
    "http://hl7.org/fhir/uv/bulkdata/ValueSet/file-encryption-type",
    "http://hl7.org/fhir/uv/bulkdata/CodeSystem/file-encryption-type",
)
KEY_ALGORITHMS = [  # what may wrap the file key for this server's RSA or EC key (RSA1_5 is broken: never)
    "RSA-OAEP",
    "RSA-OAEP-256",
    "ECDH-ES",
    "ECDH-ES+A128KW",
    "ECDH-ES+A192KW",
    "ECDH-ES+A256KW",
    "A128GCM",
    "A192GCM",
    "A256GCM",
    "A128CBC-HS256",
    "A192CBC-HS384",
    "A256CBC-HS512",
]
MAX_KEY_JWE_CHARS = 16 * 1024  # a wrapped AES key with its header is well under 2 KB
MAX_SEGMENT_BYTES = 64 * 1024  # a file's header, wrapped key, IV and tag: a few hundred bytes
CONTENT_KEY_BYTES = {"A128GCM": 16, "A192GCM": 24, "A256GCM": 32}
WRAPPING_KEY_BYTES = {"A128KW": 16, "A192KW": 24, "A256KW": 32}
GCM_TAG_BYTES = 16
GCM_IV_BYTES = 12


class InvalidFileKey(ValueError):
    """`fileEncryptionKey` is not a key this server can open; the message says why, never the key."""


class FileDecryptionFailed(SourceUnavailable):
    """A file could not be decrypted with the submission's key: not a JWE this server reads, or its tag does not
    match (a wrong key, or the file changed after it was encrypted). Reading it again does not help."""

    def __init__(self, source: str, reason: str, *, retryable: bool = False):
        super().__init__(source, reason, retryable=retryable)


def check_file_key(coding: object, value: object) -> str:
    """The `fileEncryptionKey` JWE to keep with the import, once this server's key opened it; InvalidFileKey when
    the coding is not `jwe` or the value is not a key for this server."""
    if coding is not None:
        if not isinstance(coding, dict) or coding.get("code") != "jwe":
            raise InvalidFileKey("fileEncryptionKey coding: only the code jwe is supported")
        if coding.get("system") not in (None, *FILE_ENCRYPTION_SYSTEMS):
            raise InvalidFileKey(
                f"fileEncryptionKey coding system {coding.get('system')!r} is not file-encryption-type"
            )
    if not isinstance(value, str) or not value:
        raise InvalidFileKey("fileEncryptionKey needs a value: the JWE that delivers the files' key")
    file_key(value)
    return value


def file_key(value: str) -> bytes:
    """The AES key the `fileEncryptionKey` JWE delivers, opened with BULK_SUBMIT_FILE_DECRYPTION_JWK."""
    if not settings.BULK_SUBMIT_FILE_DECRYPTION_JWK:
        raise InvalidFileKey(
            "this server takes no encrypted files: it has no key for them (BULK_SUBMIT_FILE_DECRYPTION_JWK)"
        )
    if len(value) > MAX_KEY_JWE_CHARS or value.count(".") != 4:
        raise InvalidFileKey("fileEncryptionKey value is not a JWE in compact serialization")
    token = jwe.JWE(algs=KEY_ALGORITHMS)
    try:
        token.deserialize(value, key=jwk.JWK(**settings.BULK_SUBMIT_FILE_DECRYPTION_JWK))
    except (JWException, ValueError, TypeError):
        raise InvalidFileKey(
            "fileEncryptionKey could not be opened with this server's key (BULK_SUBMIT_FILE_DECRYPTION_JWK): "
            "encrypt it to that key's public half"
        ) from None
    return _key_bytes(token.payload)


def _key_bytes(payload: bytes) -> bytes:
    try:
        key = json.loads(payload)
    except ValueError:
        key = None
    if isinstance(key, dict):
        if key.get("kty") != "oct" or not isinstance(key.get("k"), str):
            raise InvalidFileKey("fileEncryptionKey delivers a JWK that is not a symmetric key (kty oct)")
        try:
            payload = _unbase64url(key["k"].encode())
        except ValueError:
            raise InvalidFileKey("fileEncryptionKey delivers a JWK whose k is not base64url") from None
    if len(payload) not in (16, 24, 32):
        raise InvalidFileKey("fileEncryptionKey delivers no AES key (16, 24 or 32 bytes)")
    return payload


def decrypted(blocks: Iterable[bytes], key: bytes, *, source: str) -> Iterator[bytes]:
    """The plaintext of a file that is a JWE in compact serialization, as its bytes arrive; FileDecryptionFailed
    (after the last plaintext block) when the tag does not match, at once when it is not a JWE this reads."""
    segments = _Segments(blocks, source)
    protected = segments.small("protected header")
    header = _header(protected, source)
    content_key = _content_key(header, _decoded(segments.small("encrypted key"), source), key, source)
    iv = _decoded(segments.small("initialization vector"), source)
    if len(iv) != GCM_IV_BYTES:
        raise FileDecryptionFailed(
            source, f"its initialization vector is not {GCM_IV_BYTES * 8} bits, as AES-GCM wants"
        )
    decryptor = Cipher(algorithms.AES(content_key), modes.GCM(iv)).decryptor()
    decryptor.authenticate_additional_data(protected)
    inflater = zlib.decompressobj(-zlib.MAX_WBITS) if header.get("zip") == "DEF" else None
    for ciphertext in _base64url_pieces(segments.ciphertext(), source):
        plaintext = decryptor.update(ciphertext)
        if inflater is None:
            yield plaintext
        else:
            yield from _inflate(inflater, plaintext, source)
    tag = _decoded(segments.rest(), source)
    try:
        if len(tag) != GCM_TAG_BYTES:
            raise InvalidTag
        decryptor.finalize_with_tag(tag)
    except InvalidTag:
        raise FileDecryptionFailed(
            source,
            "its authentication tag does not match: the fileEncryptionKey is not the one it was encrypted with, "
            "or the file changed after it was encrypted",
        ) from None
    if inflater is not None and not inflater.eof:
        raise FileDecryptionFailed(source, "its compressed content (zip DEF) ends before the deflate stream does")


def _header(protected: bytes, source: str) -> dict:
    try:
        header = json.loads(_unbase64url(protected))
    except ValueError:
        header = None
    if not isinstance(header, dict):
        raise FileDecryptionFailed(source, "it is not a JWE in compact serialization (no JSON protected header)")
    if header.get("enc") not in CONTENT_KEY_BYTES:
        raise FileDecryptionFailed(
            source, f"enc {header.get('enc')!r} is not supported: use {', '.join(CONTENT_KEY_BYTES)}"
        )
    if header.get("alg") != "dir" and header.get("alg") not in WRAPPING_KEY_BYTES:
        raise FileDecryptionFailed(
            source, f"alg {header.get('alg')!r} is not supported: use dir, {', '.join(WRAPPING_KEY_BYTES)}"
        )
    if header.get("zip") not in (None, "DEF"):
        raise FileDecryptionFailed(source, f"zip {header.get('zip')!r} is not supported: use DEF or none")
    if header.get("crit"):
        raise FileDecryptionFailed(
            source, f"it has critical header parameters this server does not know: {header['crit']}"
        )
    return header


def _content_key(header: dict, encrypted_key: bytes, key: bytes, source: str) -> bytes:
    """The file's AES-GCM key: the submission's key itself (`dir`), or the key it unwraps (`A…KW`)."""
    wanted = CONTENT_KEY_BYTES[header["enc"]]
    if header["alg"] == "dir":
        if encrypted_key or len(key) != wanted:
            raise FileDecryptionFailed(
                source,
                f"alg dir with enc {header['enc']} wants a {wanted * 8}-bit fileEncryptionKey and no wrapped key",
            )
        return key
    if len(key) != WRAPPING_KEY_BYTES[header["alg"]]:
        raise FileDecryptionFailed(
            source, f"alg {header['alg']} does not go with a {len(key) * 8}-bit fileEncryptionKey"
        )
    try:
        content_key = aes_key_unwrap(key, encrypted_key)
    except (InvalidUnwrap, ValueError):
        raise FileDecryptionFailed(
            source, "its content key does not unwrap: the fileEncryptionKey is not the one it was encrypted with"
        ) from None
    if len(content_key) != wanted:
        raise FileDecryptionFailed(source, f"its content key is not a {wanted * 8}-bit key for {header['enc']}")
    return content_key


class _Segments:
    """The five dot-separated parts of a compact JWE read from a byte stream: the small ones whole, the
    ciphertext as it comes."""

    def __init__(self, blocks: Iterable[bytes], source: str):
        self._blocks = iter(blocks)
        self._buffer = b""
        self._source = source

    def _more(self) -> bool:
        block = next(self._blocks, None)
        if block is None:
            return False
        self._buffer += block
        return True

    def small(self, what: str) -> bytes:
        while (end := self._buffer.find(b".")) < 0:
            if len(self._buffer) > MAX_SEGMENT_BYTES or not self._more():
                raise FileDecryptionFailed(self._source, f"it is not a JWE in compact serialization (no {what})")
        segment, self._buffer = self._buffer[:end], self._buffer[end + 1 :]
        return segment

    def ciphertext(self) -> Iterator[bytes]:
        while (end := self._buffer.find(b".")) < 0:
            piece, self._buffer = self._buffer, b""
            if piece:
                yield piece
            if not self._more():
                raise FileDecryptionFailed(
                    self._source, "it ends inside the ciphertext: the file was cut off", retryable=True
                )
        piece, self._buffer = self._buffer[:end], self._buffer[end + 1 :]
        yield piece

    def rest(self) -> bytes:
        while self._more():
            if len(self._buffer) > MAX_SEGMENT_BYTES:
                raise FileDecryptionFailed(self._source, "it is not a JWE in compact serialization (a long tag)")
        return self._buffer.strip()


def _base64url_pieces(pieces: Iterable[bytes], source: str) -> Iterator[bytes]:
    """Base64url text arriving in pieces, decoded four characters at a time (the last group unpadded)."""
    pending = b""
    for piece in pieces:
        pending += piece
        whole = len(pending) - len(pending) % 4
        if whole:
            yield _decoded(pending[:whole], source)
            pending = pending[whole:]
    if pending:
        yield _decoded(pending, source)


def _unbase64url(text: bytes) -> bytes:
    """ValueError (binascii.Error) for anything but base64url."""
    return base64.b64decode(text + b"=" * (-len(text) % 4), altchars=b"-_", validate=True)


def _decoded(text: bytes, source: str) -> bytes:
    try:
        return _unbase64url(text)
    except ValueError:
        raise FileDecryptionFailed(source, "it is not a JWE in compact serialization (not base64url)") from None


def _inflate(inflater, data: bytes, source: str) -> Iterator[bytes]:
    """Bounded output per call, as `inflated` does for gzip: a deflate bomb cannot blow up memory."""
    try:
        yield inflater.decompress(data, READ_BLOCK * 16)
        while inflater.unconsumed_tail:
            yield inflater.decompress(inflater.unconsumed_tail, READ_BLOCK * 16)
    except zlib.error as error:
        raise FileDecryptionFailed(
            source,
            f"its compressed content (zip DEF) is corrupt ({error}): a wrong fileEncryptionKey, or the file changed",
        ) from None
