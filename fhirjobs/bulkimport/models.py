"""An import request, the ids it brings (for `urn:uuid:` references), its rejected lines, the counts of its
chunks, and Bulk Submit.

The batch job instance holds the import's status, progress and report; these rows hold what the job does
not: who asked, the credentials for the sources (kept out of the job's parameters, which the control API
shows), the ids of the import set while it loads, the counts of load chunks that passed nothing on, and
the lines it refused (the error NDJSON is streamed
from them).
"""

import uuid

from django.conf import settings
from django.db import models


class BulkImport(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)  # the id in the status URL
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="bulk_imports", null=True, blank=True
    )  # null: started from the shell
    job_instance_id = models.UUIDField(unique=True, null=True, blank=True)  # null: loaded inline (load_fhir)
    request_url = models.TextField(blank=True)
    request_headers = models.JSONField(default=dict, blank=True)  # sent with every fetch (Authorization, …)
    # $bulk-submit `fileEncryptionKey`: the JWE delivering the key of the encrypted manifest and files (only this
    # server's key opens it). Forgotten with the request headers (`services.discard_ended_import_data`).
    file_encryption_key = models.TextField(blank=True, default="")
    submission = models.ForeignKey(
        "BulkSubmission", on_delete=models.CASCADE, null=True, blank=True, related_name="imports"
    )
    manifest_url = models.TextField(blank=True)  # $bulk-submit: the manifest this import reads
    # The starter's authority over SearchParameters at kick-off (fhirstore.authority); the load also wants the
    # owner still active and staff or granted the permission, so it does not outlive the owner's standing.
    manages_search_parameters = models.BooleanField(default=False)
    # $bulk-submit `replacesManifestUrl`: the import this one's manifest corrects. Once this one completes, an
    # undo job removes what only the replaced one brought (this one's staged ids are kept until then).
    replaces = models.OneToOneField(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="replaced_by"
    )
    undo_job_id = models.UUIDField(null=True, blank=True)  # the undo job started when this one completed
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        permissions = [("start_import", "May start bulk imports ($import, $bulk-submit)")]

    def __str__(self) -> str:
        return f"import {self.id} (job {self.job_instance_id})"


class StagedId(models.Model):
    """One resource of an import set, noted while its files are split, so that `urn:uuid:<id>` references
    resolve to `Type/<id>` whatever the order the files load in. Deleted when the import reports."""

    pk = models.CompositePrimaryKey("import_id", "logical_id", "resource_type")
    import_id = models.UUIDField()  # no foreign key: COPY-speed inserts, and inline loads have no job
    logical_id = models.CharField(max_length=64, db_collation="C")
    resource_type = models.CharField(max_length=64, db_collation="C")


class ImportIssue(models.Model):
    """A line the import refused: one OperationOutcome of the error NDJSON."""

    import_id = models.UUIDField()
    chunk_id = models.UUIDField(null=True)  # a rerun of the chunk replaces its issues
    file = models.TextField()
    line = models.PositiveIntegerField(null=True)
    message = models.TextField()

    class Meta:
        indexes = [
            models.Index(fields=["import_id", "file", "line"], name="bulkimport_issue_order"),
            models.Index(fields=["chunk_id"], name="bulkimport_issue_chunk"),
        ]


class LoadSummary(models.Model):
    """The counts of a load chunk that deferred nothing: it emits no `load-deferred` chunk (the engine's round
    trip for one costs ~5 % of an import's wall time), so its summary waits here for the report. Kept, like
    staged ids, until a day after the job ended: a reducer run again after a crash reads them again."""

    chunk_id = models.UUIDField(primary_key=True)  # a rerun of the chunk replaces its summary
    import_id = models.UUIDField(db_index=True)
    summary = models.JSONField()


class BulkSubmission(models.Model):
    """A Bulk Data `$bulk-submit` submission: manifests a provider adds under (submitter, submissionId)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="bulk_submissions")
    submitter = models.CharField(max_length=500)  # system|value of the submitter Identifier
    submission_id = models.CharField(max_length=200)
    status = models.CharField(max_length=32, default="in-progress")  # in-progress, completed, stopped
    undo_job_id = models.UUIDField(null=True, blank=True)  # stopped: the job removing what it loaded
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["submitter", "submission_id"], name="bulkimport_submission")]

    def __str__(self) -> str:
        return f"submission {self.submitter} {self.submission_id}"


class ImportWrite(models.Model):
    """A version a Bulk Submit import wrote: what undoing the submission (`stopped`) or the import (replaced by a
    corrected manifest) takes back. Written by one COPY per write batch, in the batch's transaction, so a rerun
    chunk (whose content is unchanged by then) adds nothing and the record never disagrees with the store.
    Only imports of a submission keep one: a plain `$import` or `load_fhir` has nothing to undo."""

    pk = models.CompositePrimaryKey("import_id", "resource_type", "logical_id", "version_id")
    import_id = models.UUIDField()  # no foreign key: COPY-speed inserts, as staged ids
    resource_type = models.CharField(max_length=64, db_collation="C")
    logical_id = models.CharField(max_length=64, db_collation="C")
    version_id = models.PositiveIntegerField()


class UndoSummary(models.Model):
    """The counts of one chunk of an undo job (removed, restored, kept because written since), kept for its
    report; written in the chunk's transaction, so a chunk run again after a crash (which finds its records
    gone) keeps the counts of the run that did the work."""

    chunk_id = models.UUIDField(primary_key=True)
    job_id = models.UUIDField(db_index=True)
    summary = models.JSONField()
