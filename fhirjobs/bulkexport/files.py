"""Export files in the `bulkexport` storage (STORAGES["bulkexport"]: the database by default, any backend).

Every writing of a file gets a name of its own (`<export id>/<Type>/<file id>.<attempt>.ndjson`): the file's
row is pointed at it only once it is whole, so a download never reads a file being written or rewritten,
and a rerun of a write step never writes over the file a client may be reading. What an attempt that died
before its row was written left behind is under the export's directory: deleting an export deletes that
directory, not only the files its rows name.
"""

from __future__ import annotations

import logging
import uuid
import zlib
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import IO
from uuid import UUID

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import Storage, storages

logger = logging.getLogger(__name__)


def export_storage() -> Storage:
    return storages["bulkexport"]


def connect_export_storage() -> None:
    """Set the storage's client up now, where a storage has one (S3Storage's boto3 resource: loading the S3 service
    model takes 0.3-1 s of a loaded machine's CPU and ~35 MiB, once per process and thread), in this thread and, when
    files are written in the background (`FileWriter`), in the writing thread; others need none. A storage that
    cannot set up logs why and is left to fail where a file is written, with the job's error."""
    _connect()
    if settings.BULK_EXPORT_UPLOAD_WHILE_READING:
        _background_writer().submit(_connect)


def _connect() -> None:
    try:
        getattr(export_storage(), "connection", None)
    except Exception:
        logger.exception("the export storage's client could not be set up")


_writer_thread: ThreadPoolExecutor | None = None


def _background_writer() -> ThreadPoolExecutor:
    """One thread per process, started at its first use (in the pool process, after the fork), that writes files
    while the step reads on: one storage client for all of them, set up once."""
    global _writer_thread
    if _writer_thread is None:
        _writer_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="export-file-writer")
    return _writer_thread


class FileWriter:
    """Writes files of a step: in the background when BULK_EXPORT_UPLOAD_WHILE_READING (an object store: the upload
    of one part's files overlaps the reading of the next part from PostgreSQL, where they followed one another),
    otherwise at once. `wait` returns once every file is written, or raises the first error."""

    def __init__(self) -> None:
        self.background = settings.BULK_EXPORT_UPLOAD_WHILE_READING
        self.pending: list[Future] = []

    def write(self, path: str, content: bytes) -> None:
        if self.background:
            self.pending.append(_background_writer().submit(write_file, path, content))
        else:
            write_file(path, content)

    def wait(self) -> None:
        pending, self.pending = self.pending, []
        errors = [error for future in pending if (error := future.exception()) is not None]
        if errors:
            raise errors[0]


@contextmanager
def file_writer() -> Iterator[FileWriter]:
    """A FileWriter whose files are all written when the block ends (also when it raises: nothing is left writing)."""
    writer = FileWriter()
    try:
        yield writer
    except BaseException:
        try:
            writer.wait()
        except Exception:
            logger.exception("an export file could not be written")
        raise
    writer.wait()


def new_file_path(export_id: UUID | str, resource_type: str, file_id: UUID | str) -> str:
    """A name no other writing of this file has had."""
    return f"{export_id}/{resource_type}/{file_id}.{uuid.uuid4().hex[:12]}.ndjson"


def write_file(path: str, content: bytes) -> None:
    """Write `content` under `path`, a fresh name (see `new_file_path`), as the storage writes: in pieces."""
    saved = export_storage().save(path, ContentFile(content))
    if saved != path:  # a storage that renames on a clash cannot clash here: the name is new
        raise RuntimeError(f"the export storage stored {path!r} as {saved!r}")


def delete_files(paths: Iterable[str]) -> None:
    storage, paths = export_storage(), list(paths)
    if hasattr(storage, "delete_many"):  # the database storage: a few statements for any number of files
        storage.delete_many(paths)
        return
    for path in paths:
        storage.delete(path)


def delete_export_files(export_id: UUID | str) -> int:
    """Delete every file under the export's directory, also those no row names (a write step that died
    between storing a file and writing its row). Returns how many there were."""
    paths = list(_files_under(export_storage(), f"{export_id}/"))
    delete_files(paths)
    return len(paths)


def _files_under(storage: Storage, directory: str) -> Iterator[str]:
    try:
        directories, files = storage.listdir(directory)
    except FileNotFoundError:  # the file system: the export never wrote a file
        return
    yield from (f"{directory}{name}" for name in files)
    for name in directories:
        yield from _files_under(storage, f"{directory}{name}/")


GZIP_LEVEL = 1  # NDJSON shrinks ~8x even at level 1, at a fraction of the CPU of the default 6
STREAM_BLOCK = 256 * 1024


def gzipped(stream: IO[bytes]) -> Iterator[bytes]:
    """The stream gzip-compressed, a block at a time (a download never holds a whole file)."""
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)  # wbits 31: the gzip container
    with stream:
        while block := stream.read(STREAM_BLOCK):
            if compressed := compressor.compress(block):
                yield compressed
    yield compressor.flush()


def blocks(stream: IO[bytes]) -> Iterator[bytes]:
    """The stream a block at a time, then closed."""
    with stream:
        while block := stream.read(STREAM_BLOCK):
            yield block


def presigned_url(path: str) -> str | None:
    """A URL of the file that authorizes its bearer for a short while (an object store's presigned URL), or None
    when the storage makes none (the database, the file system, an S3Storage without `querystring_auth`)."""
    storage = export_storage()
    if not getattr(storage, "querystring_auth", False):
        return None
    return storage.url(path)


def open_file(path: str) -> IO[bytes]:
    """FileNotFoundError when the file is gone."""
    return export_storage().open(path, "rb")


def stores_gzipped() -> bool:
    """Whether the storage keeps files gzip-compressed and serves them so (`blobstore.s3.GzipS3Storage`: its
    objects carry `Content-Encoding: gzip`, and so do its presigned downloads)."""
    return hasattr(export_storage(), "open_gzipped")


def open_gzipped(path: str) -> IO[bytes]:
    """The file as the storage keeps it, gzip-compressed (see `stores_gzipped`); FileNotFoundError when gone."""
    return export_storage().open_gzipped(path)
