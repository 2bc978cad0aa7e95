"""The bulk export as plain functions: kick-off, status, delete, download, purge. The views are thin over these.

An export belongs to the user who started it: another user's export is "not found" to everyone else.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import IO, Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from batch import control
from batch.control import JobNotFound, JobStateConflict
from fhirjobs.bulkexport.definition import BULK_EXPORT_JOB
from fhirjobs.bulkexport.exceptions import ExportFailed, ExportFileNotFound, ExportNotFound, TooManyExports
from fhirjobs.bulkexport.files import (
    delete_export_files,
    open_file,
    open_gzipped,
    presigned_url,
    stores_gzipped,
)
from fhirjobs.bulkexport.manifests import manifest_page
from fhirjobs.bulkexport.models import BulkExport, ExportFile, Publication
from fhirjobs.bulkexport.parameters import ExportRequest, job_parameters, read_types
from fhirjobs.common.status import State, job_status
from fhirstore.ownership import owned_row
from fhirstore.snapshots import hold_snapshot

PURGE_PAGE = 100  # exports deleted per transaction by the purge
NDJSON = "application/fhir+ndjson"  # the only output format: every file of a manifest is in it
MANIFEST_TYPE = "http://hl7.org/fhir/uv/bulkdata/StructureDefinition/BulkDataManifest"  # STU4 ballot's model


@dataclass(frozen=True)
class KickOff:
    export: BulkExport
    reused: bool  # an identical export of the same user was running already
    warnings: tuple[str, ...]  # what lenient handling left out


def kick_off(user: AbstractBaseUser, request: ExportRequest, *, base_url: str, request_url: str) -> KickOff:
    """Start an export job, or return the identical one this user has running.

    TooManyExports when the user has BULK_EXPORT_MAX_RUNNING_PER_USER exports running already.
    """
    fingerprint = request.fingerprint()
    with transaction.atomic():
        # One kick-off per user at a time, so two concurrent ones cannot both pass the limit or both start.
        get_user_model().objects.select_for_update().filter(pk=user.pk).values_list("pk").first()
        running = _running_exports(user)
        identical = running.filter(fingerprint=fingerprint).first()
        if identical is not None:
            return KickOff(identical, True, request.warnings)
        limit = settings.BULK_EXPORT_MAX_RUNNING_PER_USER
        if running.count() >= limit:
            raise TooManyExports(
                f"{limit} of your exports are running, the most allowed; retry once one has finished (or DELETE one)"
            )
        # transactionTime: the export holds everything up to it, and a `_since` of it misses nothing later. The
        # snapshot hold keeps expunges off the types it reads until it ends (`fhirstore.snapshots`): a resource
        # that existed then cannot vanish with its history before the export has read it.
        export_id = uuid.uuid4()
        now = hold_snapshot(export_id, read_types(request.level, request.types, request.associated_data))
        job = control.start_job(
            BULK_EXPORT_JOB,
            job_parameters(
                request, export_id=export_id, base_url=base_url, request_url=request_url, transaction_time=now
            ),
            started_by=user.get_username(),
            max_concurrent_chunks=settings.BULK_EXPORT_MAX_CONCURRENT_CHUNKS or None,
            instance_id=export_id,  # one id: the `_jobId` a client polls is the job's id for operators
        )
        export = BulkExport.objects.create(
            id=export_id,
            owner=user,
            job_instance_id=job.id,
            request_url=request_url,
            fingerprint=fingerprint,
            transaction_time=now,
            partial_manifests=request.partial_manifests,
        )
    return KickOff(export, False, request.warnings)


def _running_exports(user: AbstractBaseUser) -> QuerySet[BulkExport]:
    return BulkExport.objects.filter(owner=user, job_instance_id__in=control.unfinished_job_ids())


@dataclass(frozen=True)
class ExportStatus:
    state: State  # RUNNING or COMPLETED: the other states are errors
    progress: str  # X-Progress while running: short, for people
    manifest: dict[str, Any] | None = None  # while running: the partial manifest, if asked for and any file is written
    expires_at: datetime | None = None


def export_status(
    user: AbstractBaseUser, export_id: uuid.UUID | str, *, page: int = 1, status_url: str = ""
) -> ExportStatus:
    """Running or completed; ExportFailed for a failed export, ExportNotFound for a deleted, cancelled,
    expired or unknown one (or another user's).

    An export kicked off with `allowPartialManifests` answers with page `page` of its manifest (see
    `manifests`; a `next` link is `status_url` with `&page=N`), while it runs too; any other export has
    one page, its whole manifest, once it has completed.
    """
    export = _owned_export(user, export_id)
    if page != 1 and not export.partial_manifests:
        raise ExportNotFound(f"Export {export_id} has one manifest: it was not kicked off with allowPartialManifests")
    status = job_status(export.job_instance_id)
    if status.state is State.CANCELLED:
        raise ExportNotFound(f"Export {export_id} was cancelled")
    if status.state is State.FAILED:
        control.discard_chunk_data([export.job_instance_id])
        raise ExportFailed(
            f"Export {export_id} failed: {export.failure}"
            if export.failure
            else f"Export {export_id} failed on the server (job {export.job_instance_id}); an operator can see why"
        )
    if status.state is State.COMPLETED:
        if export.expires_at is not None and export.expires_at <= timezone.now():
            raise ExportNotFound(f"Export {export_id} has expired")
        if export.partial_manifests:
            return ExportStatus(
                State.COMPLETED,
                status.progress,
                _paged(export, status.job.parameters, page, status_url, completed=True),
                export.expires_at,
            )
        return ExportStatus(State.COMPLETED, status.progress, _in_spec_order(status.job.report), export.expires_at)
    if export.partial_manifests:
        return ExportStatus(
            State.RUNNING, status.progress, _paged(export, status.job.parameters, page, status_url, completed=False)
        )
    return ExportStatus(State.RUNNING, status.progress)


def _paged(
    export: BulkExport, parameters: Any, page: int, status_url: str, *, completed: bool
) -> dict[str, Any] | None:
    manifest = manifest_page(
        export.id, parameters, page=page, page_url=lambda number: f"{status_url}&page={number}", completed=completed
    )
    return None if manifest is None else _in_spec_order(manifest)


def discard_ended_export_data() -> int:
    """Clear the work-chunk data (resource ids, NDJSON) that failed or cancelled exports left behind."""
    return control.discard_chunk_data(BulkExport.objects.values("job_instance_id"))


def _in_spec_order(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest with its keys in the order of the spec's example (the report column keeps them jsonb's way),
    in the STU4 ballot's shape when BULK_EXPORT_KICKOFF is `post-only` (see `stu4_manifest`)."""
    keys = ("transactionTime", "request", "requiresAccessToken", "outputOrganizedBy", "output", "deleted", "error")
    entry_keys = ("type", "url", "count")
    ordered = {
        **{key: manifest[key] for key in keys if key in manifest},
        "output": [{key: item[key] for key in entry_keys if key in item} for item in manifest["output"]],
        **({"link": manifest["link"]} if "link" in manifest else {}),
    }
    return stu4_manifest(ordered) if settings.BULK_EXPORT_KICKOFF == "post-only" else ordered


def stu4_manifest(manifest: dict[str, Any]) -> dict[str, Any]:
    """A manifest as the STU4 ballot's BulkDataManifest model has it: `manifestType` and `outputFormat` added,
    the deprecated `request` removed, `error` renamed `outcome`. The same files and pages, so a server switched
    to `post-only` answers exports started before in the new shape."""
    return {
        "manifestType": MANIFEST_TYPE,
        "transactionTime": manifest["transactionTime"],
        "requiresAccessToken": manifest["requiresAccessToken"],
        "outputFormat": NDJSON,
        **{key: manifest[key] for key in ("outputOrganizedBy", "output", "deleted") if key in manifest},
        "outcome": manifest.get("error", []),
        **({"link": manifest["link"]} if "link" in manifest else {}),
    }


def delete_export(user: AbstractBaseUser, export_id: uuid.UUID | str) -> None:
    """Cancel a running export, or remove a finished one; either way its files and rows are gone after."""
    with transaction.atomic():
        export = _owned_export(user, export_id, lock=True)
        try:
            control.cancel_job(export.job_instance_id)
        except (JobStateConflict, JobNotFound):
            pass  # it has ended already (or batch purged it): only the files are left to remove
        control.discard_chunk_data([export.job_instance_id])  # the patient data its unfinished chunks held
        export.delete()
    delete_export_files(export_id)


@dataclass(frozen=True)
class ExportDownload:
    """How to answer a download: a redirect to a URL that carries its own short-lived authorization (an object
    store's presigned URL), or the content streamed through this process."""

    file: ExportFile
    redirect_to: str | None = None
    stream: IO[bytes] | None = None
    gzipped: bool = False  # the stream is gzip-compressed: the answer is `Content-Encoding: gzip`


def download_export_file(
    user: AbstractBaseUser, file_id: uuid.UUID | str, *, accepts_gzip: bool = False
) -> ExportDownload:
    """The caller's file, after the same checks either way; ExportFileNotFound for a deleted, expired or foreign one.

    The manifest says `requiresAccessToken: true`: its URLs are this server's, and a download needs the
    export's owner's token. Once that is checked, a storage that makes presigned URLs (django-storages'
    S3Storage with `querystring_auth`) is answered with a redirect to one, valid for its `querystring_expire`
    seconds, unless BULK_EXPORT_DOWNLOAD_REDIRECT is false; Bulk Data clients follow the 302 (and, as HTTP
    clients do on a redirect to another origin, without the token).

    A storage that keeps files gzip-compressed serves them with `Content-Encoding: gzip`, which only a client
    that accepts gzip may be sent: such a client gets the redirect, or the stored bytes as they are; any other
    gets the file inflated by this process.
    """
    try:
        file = ExportFile.objects.filter(id=uuid.UUID(str(file_id)), export__owner=user).first()
    except ValueError:
        file = None
    if file is None or (file.expires_at is not None and file.expires_at <= timezone.now()):
        raise ExportFileNotFound(f"Export file {file_id} is not known (deleted, expired or not yours)")
    gzipped = stores_gzipped()
    if settings.BULK_EXPORT_DOWNLOAD_REDIRECT and (accepts_gzip or not gzipped) and (url := presigned_url(file.path)):
        return ExportDownload(file, redirect_to=url)
    try:
        if gzipped and accepts_gzip:
            return ExportDownload(file, stream=open_gzipped(file.path), gzipped=True)
        return ExportDownload(file, stream=open_file(file.path))
    except FileNotFoundError:
        raise ExportFileNotFound(f"Export file {file_id} is gone") from None


@dataclass
class PurgeReport:
    exports: int = 0
    files: int = 0


def purge_expired_exports(*, now: datetime | None = None) -> PurgeReport:
    """Delete exports whose files expired, and those that ended without a manifest more than a retention ago
    (failed, cancelled, or their job purged), with their files; never a published one (`publish`)."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.BULK_EXPORT_RETENTION_SECONDS)
    expired = BulkExport.objects.filter(
        Q(expires_at__lt=now)
        | Q(expires_at__isnull=True, job_instance_id__in=control.ended_job_ids(before=cutoff))
        | (~Q(job_instance_id__in=control.job_ids()) & Q(transaction_time__lt=cutoff))
    ).exclude(id__in=Publication.objects.filter(export__isnull=False).values("export_id"))  # `$bulk-publish`'s
    report = PurgeReport()
    while True:
        with transaction.atomic():
            page = list(expired.select_for_update(skip_locked=True).values_list("id", flat=True)[:PURGE_PAGE])
            BulkExport.objects.filter(id__in=page).delete()
        report.exports += len(page)
        report.files += sum(delete_export_files(export_id) for export_id in page)
        if len(page) < PURGE_PAGE:
            return report


def delete_files_of_ended_exports() -> int:
    """Delete the files of exports whose job failed or was cancelled, at once: they hold PHI that nobody
    will download. The export row stays (a poll still answers "failed" or "cancelled") until the purge.

    Returns how many files were deleted.
    """
    ended = BulkExport.objects.filter(
        expires_at__isnull=True, job_instance_id__in=control.ended_job_ids(before=timezone.now())
    )
    deleted = 0
    while True:
        with transaction.atomic():
            page = list(
                ExportFile.objects.filter(export__in=ended)
                .select_for_update(skip_locked=True)
                .values_list("id", "export_id")[:PURGE_PAGE]
            )
            ExportFile.objects.filter(id__in=[file_id for file_id, _ in page]).delete()
        # Each export's directory, so that what a write step left without a row goes too.
        deleted += sum(delete_export_files(export_id) for export_id in {export_id for _, export_id in page})
        if len(page) < PURGE_PAGE:
            return deleted


def _owned_export(user: AbstractBaseUser, export_id: uuid.UUID | str, *, lock: bool = False) -> BulkExport:
    return owned_row(BulkExport.objects.all(), user, export_id, noun="export", not_found=ExportNotFound, lock=lock)
