"""Progress figures of a job instance, computed from its chunks as the reference does.

progress = completed / all chunks; rate = records / (last chunk end − first chunk start);
ETA = elapsed / progress − elapsed; errors = the chunks' sum; error message = the first ERRORED chunk's,
replaced by a FAILED one's; warnings = the job's moves between nodes, then the chunks' distinct warnings.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from uuid import UUID

from django.db.models import Case, Count, IntegerField, Max, Min, Q, Sum, Value, When

from batch.models import JobInstance, JobReassignment, WorkChunk
from batch.statuses import UNFINISHED_JOB_STATUSES, ChunkStatus, JobStatus

MAX_WARNINGS_SHOWN = 20  # distinct chunk warnings joined into the job's; more would drown the page
MAX_REASSIGNMENTS_SHOWN = 5  # the job's latest moves between nodes, shown before them


@dataclass(frozen=True)
class ProgressFigures:
    chunks: int
    completed_chunks: int
    combined_records_processed: int
    records_per_second: float | None
    elapsed_seconds: float | None
    progress: float
    estimated_seconds_remaining: float | None
    error_count: int
    error_message: str | None
    warning_messages: str | None

    def as_fields(self) -> dict:
        """The figures the job instance row stores."""
        fields = asdict(self)
        del fields["chunks"], fields["completed_chunks"]
        return fields


def compute_progress(instance_id: UUID) -> ProgressFigures:
    totals = WorkChunk.objects.filter(instance_id=instance_id).aggregate(
        chunks=Count("*"),
        completed=Count("status", filter=Q(status=ChunkStatus.COMPLETED)),
        records=Sum("records_processed"),
        first_start=Min("start_time"),
        last_end=Max("end_time"),
        errors=Sum("error_count"),
        failed=Count("status", filter=Q(status=ChunkStatus.FAILED)),
    )
    chunks, completed = totals["chunks"], totals["completed"]
    records = totals["records"] or 0
    rates = estimate_rates(chunks, completed, records, totals["first_start"], totals["last_end"])
    errors = totals["errors"] or 0
    return ProgressFigures(
        chunks=chunks,
        completed_chunks=completed,
        combined_records_processed=records,
        records_per_second=rates.records_per_second,
        elapsed_seconds=rates.elapsed_seconds,
        progress=rates.progress,
        estimated_seconds_remaining=rates.estimated_seconds_remaining,
        error_count=errors,
        error_message=_error_message(instance_id) if errors or totals["failed"] else None,
        warning_messages=_warnings(instance_id),
    )


@dataclass(frozen=True)
class Rates:
    progress: float
    records_per_second: float | None
    elapsed_seconds: float | None
    estimated_seconds_remaining: float | None


def estimate_rates(chunks: int, completed: int, records: int, first_start: datetime | None,
                   last_end: datetime | None) -> Rates:
    """The reference's figures from a job's chunk totals (shared with the dashboard's grouped query)."""
    elapsed = _seconds_between(first_start, last_end)
    progress = completed / chunks if chunks else 0.0
    rate = records / elapsed if elapsed else None
    remaining = elapsed / progress - elapsed if elapsed is not None and progress else None
    return Rates(progress, rate, elapsed, remaining)


def refresh_progress(instance_id: UUID) -> ProgressFigures:
    """Recompute and store the figures of a job still running (not a status change, so no transition).

    Conditional on the job being unfinished: a job that ended meanwhile keeps the figures and message its
    ending wrote (see `settle_totals`).
    """
    figures = compute_progress(instance_id)
    JobInstance.objects.filter(id=instance_id, status__in=UNFINISHED_JOB_STATUSES).update(**figures.as_fields())
    return figures


SETTLED_FIELDS = ("combined_records_processed", "records_per_second", "elapsed_seconds", "progress", "error_count")


def settle_totals(instance_id: UUID) -> None:
    """A FAILED or CANCELLED job's totals: every chunk that finished counts, also one finishing after the end.

    Its error message (why it failed, or that it was cancelled) is left as the ending wrote it.
    """
    fields = compute_progress(instance_id).as_fields()
    JobInstance.objects.filter(id=instance_id, status__in=[JobStatus.FAILED, JobStatus.CANCELLED]).update(
        **{name: fields[name] for name in SETTLED_FIELDS})


def describe_duration(seconds: float | None) -> str:
    """`10 minutes`, `1 hour 5 minutes`, `42 seconds`: for people, not for parsing."""
    if seconds is None:
        return "unknown"
    seconds = round(seconds)
    parts = []
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        amount, seconds = divmod(seconds, size)
        if amount:
            parts.append(f"{amount} {unit}{'s' if amount != 1 else ''}")
    return " ".join(parts[:2]) or "0 seconds"


def _seconds_between(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None or end <= start:
        return None
    return (end - start).total_seconds()


def _error_message(instance_id: UUID) -> str | None:
    failed_first = Case(When(status=ChunkStatus.FAILED, then=Value(0)), default=Value(1), output_field=IntegerField())
    return (WorkChunk.objects.filter(instance_id=instance_id, status__in=[ChunkStatus.FAILED, ChunkStatus.ERRORED],
                                     error_message__isnull=False)
            .order_by(failed_first, "update_time").values_list("error_message", flat=True).first())


def _warnings(instance_id: UUID) -> str | None:
    """The job's moves between nodes (latest few, oldest first), then its chunks' distinct warnings."""
    moves = reversed(JobReassignment.objects.filter(instance_id=instance_id).order_by("-at", "-id")
                     [:MAX_REASSIGNMENTS_SHOWN])
    warnings = list(WorkChunk.objects.filter(instance_id=instance_id, warning_message__isnull=False)
                    .order_by().values_list("warning_message", flat=True).distinct()[:MAX_WARNINGS_SHOWN])
    return "\n".join([*(move.describe() for move in moves), *sorted(warnings)]) or None
