"""The bulk import as plain functions: kick-off, status, cancel, error lines, purge. Views are thin over these.
Bulk Submit, which starts imports, is in `submission`; the steps run inline for `load_fhir` in `inline`.

An import belongs to the user who started it: another user's import is "not found" to them.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from batch import control
from batch.control import JobNotFound, JobStateConflict
from fhirjobs.bulkimport.definition import BULK_IMPORT_JOB
from fhirjobs.bulkimport.exceptions import ImportFailed, ImportNotFound
from fhirjobs.bulkimport.models import (
    BulkImport,
    BulkSubmission,
    ImportIssue,
    ImportWrite,
    LoadSummary,
    StagedId,
    UndoSummary,
)
from fhirjobs.bulkimport.parameters import ImportRequest
from fhirjobs.bulkimport.steps import hold_types
from fhirjobs.common.status import State, job_status
from fhirstore.authority import WriteAuthority
from fhirstore.ownership import owned_row

ISSUE_PAGE = 1000  # error lines read per query while streaming the error NDJSON


def can_import(user: AbstractBaseUser) -> bool:
    """Staff, or users given the `bulkimport.start_import` permission."""
    return bool(user and user.is_authenticated and (user.is_staff or user.has_perm("bulkimport.start_import")))


def kick_off(
    user: AbstractBaseUser | None,
    request: ImportRequest,
    *,
    authority: WriteAuthority,
    base_url: str,
    request_url: str = "",
    submission: BulkSubmission | None = None,
    replaces: BulkImport | None = None,
) -> BulkImport:
    """Record the import and start its job, in one transaction (nothing starts if either fails). The starter's
    `authority` is recorded with it: the load writes with it (a SearchParameter line of an importer who may not
    manage them is an error line)."""
    import_id = uuid.uuid4()
    with transaction.atomic():
        hold_types(import_id)  # expunges wait while it writes (`steps.hold_types`)
        job = control.start_job(
            BULK_IMPORT_JOB,
            {
                "import_id": str(import_id),
                "inputs": list(request.inputs),
                "manifest_url": request.manifest_url,
                "base_url": base_url,
                "chunk_size": request.chunk_size or settings.BULK_IMPORT_CHUNK_SIZE,
            },
            started_by=user.get_username() if user else "",
            max_concurrent_chunks=settings.BULK_IMPORT_MAX_CONCURRENT_CHUNKS or None,
            instance_id=import_id,  # one id: the `_jobId` a client polls is the job's id for operators
        )
        return BulkImport.objects.create(
            id=import_id,
            owner=user,
            job_instance_id=job.id,
            request_url=request_url,
            request_headers=request.headers,
            file_encryption_key=request.file_encryption_key,
            submission=submission,
            manifest_url=request.manifest_url,
            manages_search_parameters=authority.manages(),
            replaces=replaces,
        )


@dataclass(frozen=True)
class ImportStatus:
    state: State  # RUNNING or COMPLETED: the other states are errors
    progress: str  # X-Progress while running
    report: dict[str, Any] | None = None


def import_status(user: AbstractBaseUser, import_id: uuid.UUID | str) -> ImportStatus:
    """Running or completed (with the report); ImportFailed for a failed one, ImportNotFound for a cancelled,
    unknown or foreign one."""
    return status_of(_owned_import(user, import_id))


def status_of(bulk_import: BulkImport) -> ImportStatus:
    status = job_status(bulk_import.job_instance_id)
    if status.job is None:
        raise ImportNotFound(f"Import {bulk_import.id} is not known any more")
    if status.state is State.CANCELLED:
        raise ImportNotFound(f"Import {bulk_import.id} was cancelled")
    if status.state is State.FAILED:
        raise ImportFailed(f"Import {bulk_import.id} failed: {status.job.error_message or 'unknown error'}")
    if status.state is State.COMPLETED:
        return ImportStatus(State.COMPLETED, status.progress, status.job.report)
    return ImportStatus(State.RUNNING, status.progress)


def report_outcome(report: dict[str, Any]) -> dict[str, Any]:
    """The completed import as HAPI answers it: an OperationOutcome, one issue per type and one per problem."""
    issues = [
        {
            "severity": "information",
            "code": "informational",
            "diagnostics": f"{resource_type}: {counts['loaded']} loaded, {counts['unchanged']} unchanged, "
            f"{counts['failed']} failed",
        }
        for resource_type, counts in report["counts"].items()
    ]
    totals = report["totals"]
    issues.insert(
        0,
        {
            "severity": "information",
            "code": "informational",
            "diagnostics": f"Import completed: {totals['loaded']} loaded, {totals['unchanged']} unchanged, "
            f"{totals['failed']} failed, {report['warnings']} warnings",
        },
    )
    if report.get("error_file"):
        issues.append(
            {
                "severity": "error",
                "code": "processing",
                "diagnostics": f"{report['errors']} lines were rejected; the OperationOutcomes naming each "
                f"file and line: {report['error_file']}",
                "details": {"text": report["error_file"]},
            }
        )
    issues += [
        {"severity": "warning", "code": "informational", "diagnostics": sample} for sample in report["warning_samples"]
    ]
    return {"resourceType": "OperationOutcome", "issue": issues}


def cancel_import(user: AbstractBaseUser, import_id: uuid.UUID | str) -> None:
    """Cancel a running import (what it loaded stays); a finished one is forgotten with its error lines."""
    with transaction.atomic():
        bulk_import = _owned_import(user, import_id, lock=True)
        try:
            control.cancel_job(bulk_import.job_instance_id)
        except (JobStateConflict, JobNotFound):
            pass  # it has ended already
        control.discard_chunk_data([bulk_import.job_instance_id])  # the raw NDJSON its unfinished chunks held
        ImportIssue.objects.filter(import_id=bulk_import.id).delete()
        bulk_import.delete()


def error_lines(user: AbstractBaseUser, import_id: uuid.UUID | str) -> Iterator[bytes]:
    """The error NDJSON: one OperationOutcome per rejected line, by file and line, read page by page."""
    bulk_import = _owned_import(user, import_id)
    return _issue_lines(bulk_import.id)


def _issue_lines(import_id: uuid.UUID) -> Iterator[bytes]:
    last = (None, None, 0)
    issues = ImportIssue.objects.filter(import_id=import_id).order_by("file", "line", "id")
    page = list(issues[:ISSUE_PAGE])
    while page:
        for issue in page:
            yield (
                orjson.dumps(
                    {
                        "resourceType": "OperationOutcome",
                        "issue": [
                            {
                                "severity": "error",
                                "code": "processing",
                                "diagnostics": issue.message,
                                "location": [f"{issue.file}, line {issue.line}"],
                                "extension": [
                                    {
                                        "url": "https://heavylift.dev/fhir/StructureDefinition/import-source",
                                        "valueString": f"{issue.file}:{issue.line}",
                                    }
                                ],
                            }
                        ],
                    }
                )
                + b"\n"
            )
            last = (issue.file, issue.line, issue.id)
        page = list(issues.filter(_after(*last))[:ISSUE_PAGE])


def _after(file: str, line: int | None, issue_id: int) -> Q:
    return Q(file__gt=file) | Q(file=file, line__gt=line) | Q(file=file, line=line, id__gt=issue_id)


def _owned_import(user: AbstractBaseUser, import_id: uuid.UUID | str, *, lock: bool = False) -> BulkImport:
    return owned_row(BulkImport.objects.all(), user, import_id, noun="import", not_found=ImportNotFound, lock=lock)


@dataclass(frozen=True)
class DiscardReport:
    chunks: int  # chunks whose data (raw NDJSON lines, source URLs) was cleared
    credentials: int  # imports whose source credentials (and file encryption key) were forgotten


def discard_ended_import_data(*, now: datetime | None = None) -> DiscardReport:
    """What an ended import no longer needs and must not keep (PHI, secrets): the source credentials (and the
    `fileEncryptionKey` of a submission's encrypted files) of a completed import at once; the raw NDJSON a failed or cancelled import's unfinished chunks hold, and its
    credentials, once its restart window (BULK_IMPORT_RESTART_WINDOW_SECONDS) is over. Within the window an
    operator can restart it where it stopped, as any batch job; after it, start a new import. Run every
    minute (`periodic`)."""
    window_over = control.ended_job_ids(
        before=(now or timezone.now()) - timedelta(seconds=settings.BULK_IMPORT_RESTART_WINDOW_SECONDS)
    )
    chunks = control.discard_chunk_data(
        BulkImport.objects.filter(job_instance_id__in=window_over).values("job_instance_id")
    )
    credentials = (
        BulkImport.objects.filter(
            Q(job_instance_id__in=window_over) | Q(job_instance_id__in=control.completed_job_ids())
        )
        .exclude(request_headers={}, file_encryption_key="")
        .update(request_headers={}, file_encryption_key="")
    )
    return DiscardReport(chunks, credentials)


STAGED_IDS_KEPT_AFTER_END = timedelta(days=1)  # a reduction run again after a crash still finds them


@dataclass
class PurgeReport:
    imports: int = 0
    staged_ids: int = 0
    load_summaries: int = 0
    writes: int = 0  # the record of what a submission's imports wrote (`ImportWrite`)


def purge_ended_imports(*, now: datetime | None = None) -> PurgeReport:
    """Staged ids and load summaries of imports whose job ended more than a day ago (completed ones dropped
    their staged ids already), and imports (with their rejected lines and the record of what they wrote) whose
    job the batch engine has purged: a submission can be stopped, and what it loaded undone, until then."""
    now = now or timezone.now()
    report = PurgeReport()
    gone = BulkImport.objects.filter(job_instance_id__isnull=False).exclude(job_instance_id__in=control.job_ids())
    gone_ids = list(gone.values_list("id", flat=True))
    ImportIssue.objects.filter(import_id__in=gone_ids).delete()
    report.imports = gone.filter(id__in=gone_ids).delete()[1].get("bulkimport.BulkImport", 0)
    ended = BulkImport.objects.filter(job_instance_id__in=control.ended_job_ids(before=now - STAGED_IDS_KEPT_AFTER_END))
    known = BulkImport.objects.values("id")
    leftover = Q(import_id__in=ended.values("id")) | ~Q(import_id__in=known)
    report.staged_ids = StagedId.objects.filter(leftover).delete()[0]
    report.load_summaries = LoadSummary.objects.filter(leftover).delete()[0]
    report.writes = ImportWrite.objects.filter(~Q(import_id__in=known)).delete()[0]
    UndoSummary.objects.exclude(job_id__in=control.job_ids()).delete()
    return report
