"""What each delete-expunge chunk removed: written in the chunk's own transaction, with the deletes.

A chunk run again (a killed worker, a retry) finds its row and reports the same counts without deleting
anything: the job's counts are exact however often its chunks run. The report sums the rows per type.
"""

from django.db import models


class ExpungedChunk(models.Model):
    chunk_id = models.UUIDField(primary_key=True)  # the delete-expunge step's work chunk
    job_instance_id = models.UUIDField(db_index=True)
    counts = models.JSONField(default=dict)  # resource type → resources removed (cascaded referrers included)

    class Meta:
        permissions = [("delete_expunge", "Can delete resources for good ($delete-expunge)")]

    def __str__(self) -> str:
        return f"chunk {self.chunk_id} of {self.job_instance_id}: {self.counts}"
