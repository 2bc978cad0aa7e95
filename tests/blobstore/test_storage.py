"""The database storage: files in pieces in PostgreSQL, saved in one transaction, read a piece at a time."""

from __future__ import annotations

import io
import threading

import pytest
from django.core.files.base import ContentFile, File
from django.db import connection

from blobstore.models import Blob, Piece
from blobstore.storage import DatabaseStorage

pytestmark = pytest.mark.django_db(transaction=True)

PIECE = 16  # bytes: tiny pieces, so a few lines of text are many


@pytest.fixture
def storage() -> DatabaseStorage:
    return DatabaseStorage(piece_bytes=PIECE)


class Reads(io.RawIOBase):
    """Content that records the size of every read asked of it."""

    def __init__(self, data: bytes):
        self.data, self.position, self.asked = data, 0, []

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        self.asked.append(len(buffer))
        count = min(len(buffer), len(self.data) - self.position)
        buffer[:count] = self.data[self.position : self.position + count]
        self.position += count
        return count

    def read(self, size: int = -1) -> bytes:
        self.asked.append(size)
        end = len(self.data) if size < 0 else self.position + size
        block, self.position = self.data[self.position : end], min(end, len(self.data))
        return block


def test_a_file_is_stored_in_pieces_and_read_back_whole(storage):
    data = b"".join(b'{"line": %d}\n' % n for n in range(100))
    content = Reads(data)

    assert storage.save("export/Patient/one.ndjson", File(content)) == "export/Patient/one.ndjson"

    assert all(0 < asked <= PIECE for asked in content.asked), "the content was read a piece at a time"
    blob = Blob.objects.get(name="export/Patient/one.ndjson")
    assert blob.size == len(data) == storage.size("export/Patient/one.ndjson")
    assert Piece.objects.filter(blob=blob).count() == -(-len(data) // PIECE)
    with storage.open("export/Patient/one.ndjson") as file:
        assert file.read() == data


def test_a_reader_seeks_and_tells_across_pieces(storage):
    data = bytes(range(256)) * 3
    storage.save("f", ContentFile(data))

    with storage.open("f") as file:
        file.seek(PIECE * 5 + 3)
        assert file.read(PIECE * 2) == data[PIECE * 5 + 3 : PIECE * 7 + 3]
        assert file.tell() == PIECE * 7 + 3
        file.seek(-10, io.SEEK_END)
        assert file.read() == data[-10:]
        file.seek(0)
        assert file.read(1) == data[:1]


def test_saving_a_name_again_replaces_the_file_and_its_pieces(storage):
    storage.save("f", ContentFile(b"first version, longer than one piece"))
    storage.save("f", ContentFile(b"second"))

    with storage.open("f") as file:
        assert file.read() == b"second"
    assert Blob.objects.count() == 1 and Piece.objects.count() == 1


def test_a_file_is_invisible_until_its_save_commits(storage):
    """Another connection (another host) neither lists, nor opens, nor sizes a file still being written."""
    halfway, go_on = threading.Event(), threading.Event()

    def pieces():
        yield b"x" * PIECE * 3
        halfway.set()
        assert go_on.wait(60)
        yield b"y" * PIECE

    class Slow(io.RawIOBase):
        def __init__(self):
            self.blocks, self.pending = pieces(), b""

        def readable(self):
            return True

        def read(self, size=-1):
            if not self.pending:
                self.pending = next(self.blocks, b"")
            block, self.pending = self.pending[:size], self.pending[size:]
            return block

    def write():
        try:
            storage.save("dir/partial.ndjson", File(Slow()))
        finally:
            connection.close()

    writer = threading.Thread(target=write)
    writer.start()
    assert halfway.wait(60)
    try:
        assert not storage.exists("dir/partial.ndjson")
        assert storage.listdir("dir") == ([], [])
        with pytest.raises(FileNotFoundError):
            storage.open("dir/partial.ndjson")
    finally:
        go_on.set()
        writer.join(60)
    assert storage.listdir("dir") == ([], ["partial.ndjson"])
    assert storage.size("dir/partial.ndjson") == PIECE * 4


def test_a_save_that_fails_halfway_leaves_nothing(storage):
    class Broken(io.RawIOBase):
        def readable(self):
            return True

        def read(self, size=-1):
            if getattr(self, "done", False):
                raise OSError("the source went away")
            self.done = True
            return b"z" * size

    with pytest.raises(OSError):
        storage.save("broken", File(Broken()))

    assert not Blob.objects.exists() and not Piece.objects.exists()


def test_listdir_lists_one_level_and_takes_like_wildcards_literally(storage):
    for name in ("a/x/1.ndjson", "a/x/2.ndjson", "a/y/3.ndjson", "a/top.ndjson", "a_b/4.ndjson", "b/5.ndjson"):
        storage.save(name, ContentFile(b"."))

    assert storage.listdir("") == (["a", "a_b", "b"], [])
    assert storage.listdir("a") == (["x", "y"], ["top.ndjson"])
    assert storage.listdir("a/x/") == ([], ["1.ndjson", "2.ndjson"])
    assert storage.listdir("a_") == ([], []), "_ is no wildcard"
    assert storage.listdir("%") == ([], []), "% is no wildcard"


def test_delete_removes_the_file_and_its_pieces_and_a_missing_name_is_no_error(storage):
    storage.save("keep", ContentFile(b"k" * 40))
    storage.save("gone", ContentFile(b"g" * 40))
    storage.save("also-gone", ContentFile(b"a"))

    storage.delete("gone")
    storage.delete_many(["also-gone", "never-was"])
    storage.delete("never-was")

    assert list(Blob.objects.values_list("name", flat=True)) == ["keep"]
    assert Piece.objects.count() == 3
    assert not storage.exists("gone")


def test_a_file_deleted_while_it_is_read_ends_the_read_with_an_error(storage):
    storage.save("f", ContentFile(b"q" * PIECE * 4))
    file = storage.open("f")
    assert file.read(PIECE) == b"q" * PIECE

    storage.delete("f")

    with pytest.raises(OSError, match="deleted while it was read"):
        file.read()
