"""What the bulk patch did, written in each patch chunk's own transaction with the new versions.

`PatchedResource` holds one row per resource a job patched, unique per job: a resource two urls match, or a
page run again (a killed worker, a retry), is patched once, never twice. `PatchedChunk` records a page's
counts, failures and (dry run) diffs, so a page run again reports the same and the report is exact.
"""

from django.db import models


class PatchedChunk(models.Model):
    chunk_id = models.UUIDField(primary_key=True)  # the patch step's work chunk
    job_instance_id = models.UUIDField(db_index=True)
    resource_type = models.CharField(max_length=64)
    patched = models.PositiveIntegerField(default=0)  # new versions written (dry run: that would be)
    unchanged = models.PositiveIntegerField(default=0)  # the patch left them as they were: no new version
    failed = models.JSONField(default=dict)  # logical id → why the patch failed on it
    diffs = models.JSONField(default=list)  # dry run: the first changes, {resource, element, before, after}

    class Meta:
        permissions = [("bulk_patch", "Can patch every resource a search matches ($hapi.fhir.bulk-patch)")]

    def __str__(self) -> str:
        return f"chunk {self.chunk_id} of {self.job_instance_id}: {self.patched} patched"


class PatchedResource(models.Model):
    job_instance_id = models.UUIDField()
    resource_type = models.CharField(max_length=64)
    logical_id = models.CharField(max_length=64)
    version_id = models.PositiveIntegerField()  # the version the patch wrote

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["job_instance_id", "resource_type", "logical_id"], name="bulkpatch_once_per_job"
            )
        ]

    def __str__(self) -> str:
        return f"{self.resource_type}/{self.logical_id}/_history/{self.version_id} by {self.job_instance_id}"
