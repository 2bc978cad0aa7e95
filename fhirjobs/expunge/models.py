"""What each expunge chunk removed, written in the chunk's transaction with the deletes: a chunk run again
finds its row, deletes nothing more and counts the same (as `deleteexpunge.ExpungedChunk`)."""

from django.db import models


class ExpungedVersionsChunk(models.Model):
    chunk_id = models.UUIDField(primary_key=True)  # the expunge step's work chunk
    job_instance_id = models.UUIDField(db_index=True)
    versions = models.PositiveIntegerField()  # previous versions removed

    class Meta:
        permissions = [("expunge", "Can expunge previous versions ($expunge)")]

    def __str__(self) -> str:
        return f"chunk {self.chunk_id} of {self.job_instance_id}: {self.versions} versions"
