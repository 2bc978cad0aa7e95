"""What each replace-references chunk rewrote: written in the chunk's own transaction, with the new versions.

A chunk run again (a killed worker, a retry) finds its row and reports the same versions without writing
anything: the Provenance lists each rewritten resource once, with the version the merge made.
"""

from django.db import models


class MergedChunk(models.Model):
    chunk_id = models.UUIDField(primary_key=True)  # the replace-references step's work chunk
    job_instance_id = models.UUIDField(db_index=True)
    versions = models.JSONField(default=list)  # `Type/id/_history/n` of each resource rewritten

    class Meta:
        permissions = [("merge_patients", "Can merge patients (Patient/$merge)")]

    def __str__(self) -> str:
        return f"chunk {self.chunk_id} of {self.job_instance_id}: {len(self.versions)} resources"
