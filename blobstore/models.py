"""A stored file (`Blob`) and its content, cut into pieces of at most a storage's `piece_bytes` (`Piece`).

A file is a name and a row id: rewriting a name makes a new row, so a reader that opened the old one never
mixes pieces of two versions. The name is compared byte-wise (collation "C") so that the unique index also
answers the prefix searches of `listdir`.
"""

from django.db import models
from django.db.models.functions import Now


class Blob(models.Model):
    name = models.TextField(unique=True, db_collation="C")
    size = models.BigIntegerField()  # bytes, the sum of its pieces
    created = models.DateTimeField(db_default=Now())  # on the database's clock

    def __str__(self) -> str:
        return f"{self.name} ({self.size} bytes)"


class Piece(models.Model):
    """Bytes `number * piece_bytes` onwards of a blob, compressed (zlib format): every piece but the last holds
    `piece_bytes` bytes before compression, so a read at any offset knows its piece without asking."""

    pk = models.CompositePrimaryKey("blob_id", "number")
    blob = models.ForeignKey(
        Blob, on_delete=models.CASCADE, related_name="pieces", db_index=False
    )  # the key's 1st column
    number = models.IntegerField()
    data = models.BinaryField()

    def __str__(self) -> str:
        return f"piece {self.number} of blob {self.blob_id}"
