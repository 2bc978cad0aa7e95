"""The bulk import as plain functions: kick-off, status, cancel, error lines, Bulk Submit. Views are thin over these.

An import belongs to the user who started it: another user's import is "not found" to them.
"""
from __future__ import annotations

import enum
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from batch import control
from batch.control import JobNotFound, JobSnapshot, JobStateConflict, JobStatus
from fhirstore.bulkimport.exceptions import ImportFailed, ImportNotFound
from fhirstore.bulkimport.loader import (
    ChunkOutcome,
    SourceLine,
    drop_staged_ids,
    load_lines,
    stage_ids,
)
from fhirstore.bulkimport.models import BulkImport, BulkSubmission, ImportIssue, LoadSummary, StagedId
from fhirstore.bulkimport.parameters import ImportRequest, SubmitRequest
from fhirstore.bulkimport.sources import READ_BLOCK, lines
from fhirstore.bulkimport.steps import BULK_IMPORT_JOB
from fhirstore.loading import BadInput, LoadReport
from fhirstore.ownership import owned_row

ISSUE_PAGE = 1000  # error lines read per query while streaming the error NDJSON


def can_import(user: AbstractBaseUser) -> bool:
    """Staff, or users given the `bulkimport.start_import` permission."""
    return bool(user and user.is_authenticated and (user.is_staff or user.has_perm("bulkimport.start_import")))


def kick_off(user: AbstractBaseUser | None, request: ImportRequest, *, base_url: str, request_url: str = "",
             submission: BulkSubmission | None = None) -> BulkImport:
    """Record the import and start its job, in one transaction (nothing starts if either fails)."""
    import_id = uuid.uuid4()
    with transaction.atomic():
        job = control.start_job(
            BULK_IMPORT_JOB,
            {"import_id": str(import_id), "inputs": list(request.inputs), "manifest_url": request.manifest_url,
             "base_url": base_url, "chunk_size": request.chunk_size or settings.BULK_IMPORT_CHUNK_SIZE},
            started_by=user.get_username() if user else "",
            max_concurrent_chunks=settings.BULK_IMPORT_MAX_CONCURRENT_CHUNKS or None,
            instance_id=import_id,  # one id: the `_jobId` a client polls is the job's id for operators
        )
        return BulkImport.objects.create(id=import_id, owner=user, job_instance_id=job.id, request_url=request_url,
                                         request_headers=request.headers, submission=submission,
                                         manifest_url=request.manifest_url)


class ImportState(enum.Enum):
    RUNNING = "running"
    COMPLETED = "completed"


@dataclass(frozen=True)
class ImportStatus:
    state: ImportState
    progress: str  # X-Progress while running
    report: dict[str, Any] | None = None


def import_status(user: AbstractBaseUser, import_id: uuid.UUID | str) -> ImportStatus:
    """Running or completed (with the report); ImportFailed for a failed one, ImportNotFound for a cancelled,
    unknown or foreign one."""
    return status_of(_owned_import(user, import_id))


def status_of(bulk_import: BulkImport) -> ImportStatus:
    try:
        job = control.get_job(bulk_import.job_instance_id)
    except JobNotFound:
        raise ImportNotFound(f"Import {bulk_import.id} is not known any more") from None
    if job.status == JobStatus.CANCELLED:
        raise ImportNotFound(f"Import {bulk_import.id} was cancelled")
    if job.status == JobStatus.FAILED:
        raise ImportFailed(f"Import {bulk_import.id} failed: {job.error_message or 'unknown error'}")
    if job.status == JobStatus.COMPLETED:
        return ImportStatus(ImportState.COMPLETED, "Completed", job.report)
    return ImportStatus(ImportState.RUNNING, _progress(job))


def _progress(job: JobSnapshot) -> str:
    if job.status == JobStatus.QUEUED:
        return "Queued"
    number, count, step_id = job.current_step_number, job.step_count, job.current_step
    step = job.step(step_id or "")
    return (f"{step_id}: {step.done} of {step.total} chunks done (step {number} of {count}), "
            f"{job.combined_records_processed} records")


def report_outcome(report: dict[str, Any]) -> dict[str, Any]:
    """The completed import as HAPI answers it: an OperationOutcome, one issue per type and one per problem."""
    issues = [{"severity": "information", "code": "informational",
               "diagnostics": f"{resource_type}: {counts['loaded']} loaded, {counts['unchanged']} unchanged, "
                              f"{counts['failed']} failed"}
              for resource_type, counts in report["counts"].items()]
    totals = report["totals"]
    issues.insert(0, {"severity": "information", "code": "informational",
                      "diagnostics": f"Import completed: {totals['loaded']} loaded, {totals['unchanged']} unchanged, "
                                     f"{totals['failed']} failed, {report['warnings']} warnings"})
    if report.get("error_file"):
        issues.append({"severity": "error", "code": "processing",
                       "diagnostics": f"{report['errors']} lines were rejected; the OperationOutcomes naming each "
                                      f"file and line: {report['error_file']}",
                       "details": {"text": report["error_file"]}})
    issues += [{"severity": "warning", "code": "informational", "diagnostics": sample}
               for sample in report["warning_samples"]]
    return {"resourceType": "OperationOutcome", "issue": issues}


def cancel_import(user: AbstractBaseUser, import_id: uuid.UUID | str) -> None:
    """Cancel a running import (what it loaded stays); a finished one is forgotten with its error lines."""
    with transaction.atomic():
        bulk_import = _owned_import(user, import_id, lock=True)
        try:
            control.cancel_job(bulk_import.job_instance_id)
        except (JobStateConflict, JobNotFound):
            pass  # it has ended already
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
            yield orjson.dumps({"resourceType": "OperationOutcome", "issue": [{
                "severity": "error", "code": "processing", "diagnostics": issue.message,
                "location": [f"{issue.file}, line {issue.line}"],
                "extension": [{"url": "https://heavylift.dev/fhir/StructureDefinition/import-source",
                               "valueString": f"{issue.file}:{issue.line}"}]}]}) + b"\n"
            last = (issue.file, issue.line, issue.id)
        page = list(issues.filter(_after(*last))[:ISSUE_PAGE])


def _after(file: str, line: int | None, issue_id: int) -> Q:
    return Q(file__gt=file) | Q(file=file, line__gt=line) | Q(file=file, line=line, id__gt=issue_id)


def _owned_import(user: AbstractBaseUser, import_id: uuid.UUID | str, *, lock: bool = False) -> BulkImport:
    return owned_row(BulkImport.objects.all(), user, import_id, noun="import", not_found=ImportNotFound, lock=lock)


def submit(user: AbstractBaseUser, request: SubmitRequest, *, base_url: str) -> BulkSubmission:
    """`$bulk-submit`: add manifests to a submission (each becomes a BULK_IMPORT job) or change its status.

    An aborted submission cancels the imports it started."""
    with transaction.atomic():
        submission, _ = BulkSubmission.objects.select_for_update().get_or_create(
            submitter=request.submitter, submission_id=request.submission_id, defaults={"owner": user})
        if submission.owner_id != user.pk:
            raise ImportNotFound("This submission belongs to another user")
        if submission.status != "in-progress" and request.manifest_urls:
            raise InvalidSubmission(f"Submission {request.submission_id} is {submission.status}: no more manifests")
        known = set(submission.imports.values_list("manifest_url", flat=True))
        for manifest_url in request.manifest_urls:
            if manifest_url not in known:  # a repeated request adds nothing
                kick_off(user, ImportRequest(headers=request.headers, manifest_url=manifest_url), base_url=base_url,
                         request_url=manifest_url, submission=submission)
        submission.status = request.status
        submission.save(update_fields=["status"])
        if request.status == "entered-in-error":
            for job_instance_id in submission.imports.values_list("job_instance_id", flat=True):
                try:
                    control.cancel_job(job_instance_id)
                except (JobStateConflict, JobNotFound):
                    pass
    return submission


class InvalidSubmission(ImportFailed):
    status = 400
    issue_code = "invalid"


@dataclass(frozen=True)
class SubmissionStatus:
    state: ImportState
    progress: str
    manifest: dict[str, Any] | None = None


def submission_status(user: AbstractBaseUser, submitter: str, submission_id: str) -> SubmissionStatus:
    """Running until the provider marked it completed and every import ended; then a status manifest."""
    submission = BulkSubmission.objects.filter(submitter=submitter, submission_id=submission_id,
                                               owner_id=user.pk).first()
    if submission is None:
        raise ImportNotFound(f"Submission {submission_id} of {submitter} is not known")
    imports = list(submission.imports.order_by("created"))
    outputs, errors, running = [], [], 0
    for bulk_import in imports:
        try:
            status = status_of(bulk_import)
        except (ImportFailed, ImportNotFound) as error:
            errors.append({"type": "OperationOutcome", "manifestUrl": bulk_import.manifest_url,
                           "diagnostics": error.message})
            continue
        if status.state is ImportState.RUNNING:
            running += 1
            continue
        for resource_type, counts in status.report["counts"].items():
            outputs.append({"type": resource_type, "manifestUrl": bulk_import.manifest_url,
                            "count": counts["loaded"] + counts["unchanged"]})
        if status.report.get("error_file"):
            errors.append({"type": "OperationOutcome", "url": status.report["error_file"],
                           "manifestUrl": bulk_import.manifest_url, "count": status.report["errors"]})
    if submission.status == "in-progress" or running:
        return SubmissionStatus(ImportState.RUNNING, f"{len(imports) - running} of {len(imports)} manifests imported"
                                + ("" if submission.status != "in-progress" else "; the submission is open"))
    return SubmissionStatus(ImportState.COMPLETED, "Completed", {
        "transactionTime": submission.created.isoformat(), "submissionId": submission.submission_id,
        "submitter": submission.submitter, "status": submission.status, "requiresAccessToken": True,
        "output": outputs, "error": errors})


def load_ndjson_files(paths: Sequence[Path], report: LoadReport, *, chunk_size: int,
                      progress: Callable[[int], None] | None = None) -> None:
    """The BULK_IMPORT job's steps run inline on local files (`load_fhir`): the same staging of ids, the same
    chunk loader, the same deferral of conditional references, without the batch engine's round trips.

    Files are streamed chunk by chunk; only the deferred lines (conditional references whose target is in a
    later file: rare, since files load in reference order) are held until the end.
    """
    import_id = BulkImport.objects.create(request_url="load_fhir").id  # known: the purge leaves its staged ids alone
    try:
        for path in paths:
            for chunk in _chunks(path, chunk_size):
                stage_ids(import_id, (line.content for line in chunk if line.content))
        outcome = ChunkOutcome()
        for path in paths:
            for chunk in _chunks(path, chunk_size):
                load_lines(chunk, import_id=import_id, defer_unresolved=True, outcome=outcome)
                if progress:
                    progress(sum(len(line.content or b"") + 1 for line in chunk))
        deferred, outcome.deferred = outcome.deferred, []
        for start in range(0, len(deferred), chunk_size):
            load_lines(deferred[start:start + chunk_size], import_id=import_id, outcome=outcome)
    finally:
        drop_staged_ids(import_id)
        BulkImport.objects.filter(id=import_id).delete()
    for resource_type, counts in outcome.counts.items():
        if counts["loaded"] + counts["unchanged"]:
            report.counts[resource_type] += counts["loaded"] + counts["unchanged"]
        if counts["unchanged"]:
            report.unchanged[resource_type] += counts["unchanged"]
    report.warnings.extend(outcome.warning_samples)
    report.bad.extend(BadInput(issue.file, issue.line, issue.message) for issue in outcome.issues)


STAGED_IDS_KEPT_AFTER_END = timedelta(days=1)  # a failed or cancelled import restarted within a day still has them


@dataclass
class PurgeReport:
    imports: int = 0
    staged_ids: int = 0
    load_summaries: int = 0


def purge_ended_imports(*, now: datetime | None = None) -> PurgeReport:
    """Staged ids and load summaries of imports whose job ended more than a day ago (completed ones dropped
    their staged ids already), and imports (with their rejected lines) whose job the batch engine has purged."""
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
    return report


def _chunks(path: Path, chunk_size: int) -> Iterator[list[SourceLine]]:
    chunk: list[SourceLine] = []
    with path.open("rb") as stream:
        for line in lines(iter(lambda: stream.read(READ_BLOCK), b""), source=str(path)):
            chunk.append(SourceLine(str(path), line.number, None if line.too_long else line.content))
            if len(chunk) >= chunk_size:
                yield chunk
                chunk = []
    if chunk:
        yield chunk
