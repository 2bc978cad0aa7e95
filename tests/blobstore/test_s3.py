"""GzipS3Storage against a real S3-compatible store (SeaweedFS, started here): objects gzip-compressed, read back
inflated a piece at a time."""

from __future__ import annotations

import gzip
import os
import uuid

import pytest
from django.core.files.base import ContentFile

from blobstore.s3 import GzipS3Storage
from heavylift.devobjectstore import client, create_bucket, running_object_store, storage_options

BUCKET = "blobs"


@pytest.fixture(scope="module")
def object_store(tmp_path_factory):
    with running_object_store(tmp_path_factory.mktemp("seaweedfs")) as running:
        create_bucket(running, BUCKET)
        yield running


@pytest.fixture
def storage(object_store) -> GzipS3Storage:
    """Pieces of 64 KiB, so that a file of a few hundred KiB is several of them."""
    return GzipS3Storage(
        piece_bytes=64 * 1024, **storage_options(object_store, BUCKET, location=f"test-{uuid.uuid4().hex[:12]}")
    )


CONTENT = b"".join(
    b'{"resourceType": "Patient", "id": "p%d", "x": "%s"}\n' % (n, os.urandom(8).hex().encode()) for n in range(20_000)
)


def test_a_file_is_stored_gzip_compressed_with_its_content_encoding(storage, object_store):
    storage.save("export/Patient/a.ndjson", ContentFile(CONTENT))

    stored = client(object_store).get_object(Bucket=BUCKET, Key=f"{storage.location}/export/Patient/a.ndjson")
    body = stored["Body"].read()
    assert stored["ContentEncoding"] == "gzip"
    assert gzip.decompress(body) == CONTENT
    assert len(body) < len(CONTENT) / 2


def test_a_file_reads_back_inflated_whole_and_in_small_reads(storage):
    storage.save("a.ndjson", ContentFile(CONTENT))

    with storage.open("a.ndjson") as whole:
        assert whole.read() == CONTENT
    with storage.open("a.ndjson") as pieces:
        assert b"".join(iter(lambda: pieces.read(1000), b"")) == CONTENT
    with storage.open_gzipped("a.ndjson") as stored:
        assert gzip.decompress(stored.read()) == CONTENT


def test_an_empty_file_reads_back_empty(storage):
    storage.save("empty.ndjson", ContentFile(b""))

    with storage.open("empty.ndjson") as empty:
        assert empty.read() == b""


def test_a_missing_file_is_file_not_found(storage):
    with pytest.raises(FileNotFoundError):
        storage.open("nothing.ndjson")
    with pytest.raises(FileNotFoundError):
        storage.open_gzipped("nothing.ndjson")


def test_a_file_is_opened_for_reading_only(storage):
    with pytest.raises(ValueError):
        storage.open("a.ndjson", "wb")
