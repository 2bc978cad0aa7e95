"""An export request and the files (HAPI's `Binary` resources) its job wrote.

The batch job instance holds the export's status, progress and manifest (its report); these rows hold what
the job does not know: who asked, for what exactly, and where the files are. Deleting an export (DELETE of
its status URL, or expiry) deletes its rows and files, so a later poll finds nothing: 404.
"""

import uuid

from django.conf import settings
from django.db import models


class BulkExport(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)  # the export id in the status URL
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="bulk_exports")
    job_instance_id = models.UUIDField(unique=True)  # `batch.JobInstance`; kept by id: batch purges its own rows
    request_url = models.TextField()  # the kick-off URL, echoed in the manifest
    # The request in canonical form: an identical request of the same owner while this one runs reuses it.
    fingerprint = models.CharField(max_length=64)
    transaction_time = models.DateTimeField()
    expires_at = models.DateTimeField(null=True, blank=True)  # set when the manifest is made
    # Why the export failed, in words for its client: a poll shows this, never the engine's error text
    # (an exception's message may name server paths or SQL). Empty: failed for a reason of the server's.
    failure = models.TextField(blank=True, default="")
    # `allowPartialManifests` (Bulk Data STU3): the status URL lists the files written so far while the export
    # runs, in manifest pages that never change once served (see `manifests`).
    partial_manifests = models.BooleanField(default=False)
    manifest_pages = models.PositiveIntegerField(default=0)  # pages served so far (partial manifests only)

    class Meta:
        indexes = [models.Index(fields=["owner", "fingerprint"], name="bulkexport_owner_request")]

    def __str__(self) -> str:
        return f"export {self.id} (job {self.job_instance_id})"


class ExportFile(models.Model):
    """One NDJSON file of one resource type: HAPI's `Binary`. Its content lives in the `bulkexport` storage."""

    id = models.UUIDField(primary_key=True, editable=False)  # derived from the chunk that wrote it: a rerun rewrites it
    export = models.ForeignKey(BulkExport, on_delete=models.CASCADE, related_name="files")
    job_instance_id = models.UUIDField()
    resource_type = models.CharField(max_length=64)
    path = models.CharField(max_length=500)  # the name in the storage
    count = models.PositiveIntegerField()  # resources (lines) in the file
    deleted = models.BooleanField(default=False)  # a `deleted` file (transaction Bundles), not an `output` one
    manifest_page = models.PositiveIntegerField(null=True, blank=True)  # the partial manifest page listing it
    created = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)  # null while the export runs

    class Meta:
        indexes = [models.Index(fields=["expires_at"], name="bulkexport_file_expiry")]

    def __str__(self) -> str:
        return f"{self.resource_type} file {self.id} ({self.count})"


class Publication(models.Model):
    """A `$bulk-publish` publication (Bulk Data STU4 ballot): a named export of BULK_PUBLISH, refreshed every
    cadence. `export` is the one served; `refreshing` the next one while it runs. The swap is one UPDATE of this
    row, so a GET sees the old manifest or the new one, never a mix."""

    name = models.CharField(primary_key=True, max_length=100)
    export = models.ForeignKey(BulkExport, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    refreshing = models.ForeignKey(BulkExport, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    published_at = models.DateTimeField(null=True, blank=True)
    etag = models.CharField(max_length=64, blank=True, default="")  # new at every swap

    def __str__(self) -> str:
        return f"publication {self.name}"
