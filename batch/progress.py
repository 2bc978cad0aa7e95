"""Progress figures of a job instance, computed from its chunks, step by step.

records = the records of the step whose records are the job's (`JobDefinition.records_step_id`: each step
reports what it handled, and a resource read, expanded and written is one resource, not three);
rate = records / running time, where running time runs from the first chunk's start to the last chunk's end
less the time the job sat FAILED or CANCELLED before a restart (`paused_seconds`);
ETA of a gated job = the sum over its chunk steps of (chunks expected − done) × the step's seconds per chunk
(a step's chunks not yet emitted are expected in the proportion its chunks so far came from the step before;
a step without a finished chunk is taken to go as fast as the step before), and progress = running time /
(running time + ETA), so a step's chunks appearing do not pull the figure back; an ungated job's steps run
side by side: progress = completed / all chunks, ETA = running time / progress − running time. A reduction's
input chunks are not work of their own and count in neither. An ended job has no ETA.
errors = the chunks' failed attempts; error message = the first ERRORED chunk's, replaced by a FAILED one's;
warnings = the job's moves between nodes, then the chunks' distinct warnings.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from uuid import UUID

from django.db.models import Case, Count, IntegerField, Max, Min, Sum, Value, When

from batch.api import JobDefinition
from batch.exceptions import UnknownJobDefinition
from batch.models import JobInstance, JobReassignment, WorkChunk
from batch.registry import registry
from batch.statuses import ENDED_JOB_STATUSES, UNFINISHED_JOB_STATUSES, ChunkStatus, JobStatus

MAX_WARNINGS_SHOWN = 20  # distinct chunk warnings joined into the job's; more would drown the page
MAX_REASSIGNMENTS_SHOWN = 5  # the job's latest moves between nodes, shown before them


@dataclass(frozen=True)
class StepTotals:
    """One step of one job: its chunks by status, their records and failed attempts, first start, last end."""

    step_id: str
    chunks: Mapping[str, int] = field(default_factory=dict)
    records: int = 0
    errors: int = 0
    start_time: datetime | None = None
    end_time: datetime | None = None

    @property
    def total(self) -> int:
        return sum(self.chunks.values())

    @property
    def done(self) -> int:
        return self.chunks.get(ChunkStatus.COMPLETED, 0)

    @property
    def duration_seconds(self) -> float | None:
        return _seconds_between(self.start_time, self.end_time)

    @property
    def records_per_second(self) -> float | None:
        duration = self.duration_seconds
        return self.records / duration if duration else None


def step_totals(instance_ids: Iterable[UUID]) -> dict[UUID, dict[str, StepTotals]]:
    """Per job, per step: one grouped query (answered from the chunks' step/status index) for all the jobs."""
    rows = (
        WorkChunk.objects.filter(instance_id__in=list(instance_ids))
        .order_by()
        .values_list("instance_id", "target_step_id", "status")
        .annotate(
            chunks=Count("*"),
            records=Sum("records_processed"),
            errors=Sum("error_count"),
            first_start=Min("start_time"),
            last_end=Max("end_time"),
        )
    )
    parts: dict[UUID, dict[str, list]] = defaultdict(dict)
    for instance_id, step_id, status, chunks, records, errors, first_start, last_end in rows:
        part = parts[instance_id].setdefault(step_id, [{}, 0, 0, None, None])
        part[0][status] = chunks
        part[1] += records or 0
        part[2] += errors or 0
        part[3] = min(filter(None, (part[3], first_start)), default=None)
        part[4] = max(filter(None, (part[4], last_end)), default=None)
    return {
        instance_id: {step_id: StepTotals(step_id, *part) for step_id, part in steps.items()}
        for instance_id, steps in parts.items()
    }


@dataclass(frozen=True)
class Rates:
    progress: float
    records: int
    records_per_second: float | None
    elapsed_seconds: float | None
    estimated_seconds_remaining: float | None


def definition_of(definition_id: str, version: int) -> JobDefinition | None:
    try:
        return registry.get(definition_id, version)
    except UnknownJobDefinition:
        return None


def estimate_rates(
    definition: JobDefinition | None, steps: Mapping[str, StepTotals], *, status: str, paused_seconds: float = 0.0
) -> Rates:
    """The job's figures from its steps' totals (`step_totals`); shared by the job row, the API and the dashboard."""
    if definition is None:  # a definition no longer registered: every step, as they are
        chunk_steps = sorted(steps)
        records = sum(step.records for step in steps.values())
    else:
        chunk_steps = [step.id for step in definition.chunk_steps]
        records = steps.get(definition.records_step_id, StepTotals("")).records
    known = [steps.get(step_id, StepTotals(step_id)) for step_id in chunk_steps]
    first_start = min((step.start_time for step in steps.values() if step.start_time), default=None)
    last_end = max((step.end_time for step in steps.values() if step.end_time), default=None)
    span = _seconds_between(first_start, last_end)
    elapsed = max(span - paused_seconds, 0.0) if span is not None else None
    rate = records / elapsed if elapsed else None
    if definition is not None and definition.gated:
        progress, remaining = _gated_estimate(known, elapsed)
    else:
        chunks, done = sum(step.total for step in known), sum(step.done for step in known)
        progress = done / chunks if chunks else 0.0
        remaining = elapsed / progress - elapsed if elapsed is not None and progress else None
    if status == JobStatus.COMPLETED:
        progress = 1.0
    if status in ENDED_JOB_STATUSES:
        remaining = None
    return Rates(progress, records, rate, elapsed, remaining)


def _gated_estimate(steps: list[StepTotals], elapsed: float | None) -> tuple[float, float | None]:
    """(progress, seconds remaining) of a gated job: its steps run one after the other, each at its own pace."""
    remaining = 0.0
    expected_before: float | None = None
    seconds_per_chunk: float | None = None
    before: StepTotals | None = None
    fraction_parts = []
    for step in steps:
        if before is None or expected_before is None:
            expected = float(step.total)
        elif before.done >= expected_before:
            expected = float(step.total)  # the step before has ended: every chunk of this one exists
        elif before.done:
            expected = max(float(step.total), step.total / before.done * expected_before)
        else:
            expected = max(float(step.total), expected_before)  # nothing known yet: a chunk for a chunk
        if step.done:
            seconds_per_chunk = (step.duration_seconds or 0.0) / step.done
        left = max(expected - step.done, 0.0)
        if left and seconds_per_chunk is None:
            remaining = None
        elif remaining is not None and left:
            remaining += left * seconds_per_chunk
        fraction_parts.append(step.done / expected if expected else 0.0)
        expected_before, before = expected, step
    if elapsed is not None and remaining is not None and elapsed + remaining > 0:
        return elapsed / (elapsed + remaining), remaining
    return (sum(fraction_parts) / len(fraction_parts) if fraction_parts else 0.0), remaining


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
    row = (
        JobInstance.objects.filter(id=instance_id)
        .values_list("definition_id", "definition_version", "status", "paused_seconds")
        .first()
    )
    definition_id, version, status, paused = row or ("", 0, "", 0.0)  # purged meanwhile: figures of nothing
    steps = step_totals([instance_id]).get(instance_id, {})
    rates = estimate_rates(definition_of(definition_id, version), steps, status=status, paused_seconds=paused)
    errors = sum(step.errors for step in steps.values())
    failed = sum(step.chunks.get(ChunkStatus.FAILED, 0) for step in steps.values())
    return ProgressFigures(
        chunks=sum(step.total for step in steps.values()),
        completed_chunks=sum(step.done for step in steps.values()),
        combined_records_processed=rates.records,
        records_per_second=rates.records_per_second,
        elapsed_seconds=rates.elapsed_seconds,
        progress=rates.progress,
        estimated_seconds_remaining=rates.estimated_seconds_remaining,
        error_count=errors,
        error_message=_error_message(instance_id) if errors or failed else None,
        warning_messages=_warnings(instance_id),
    )


def refresh_progress(instance_id: UUID) -> ProgressFigures:
    """Recompute and store the figures of a job still running (not a status change, so no transition).

    Conditional on the job being unfinished: a job that ended meanwhile keeps the figures and message its
    ending wrote (see `settle_totals`).
    """
    figures = compute_progress(instance_id)
    JobInstance.objects.filter(id=instance_id, status__in=UNFINISHED_JOB_STATUSES).update(**figures.as_fields())
    return figures


SETTLED_FIELDS = (
    "combined_records_processed",
    "records_per_second",
    "elapsed_seconds",
    "progress",
    "estimated_seconds_remaining",
    "error_count",
)


def settle_totals(instance_id: UUID) -> None:
    """A FAILED or CANCELLED job's totals: every chunk that finished counts, also one finishing after the end.

    Its error message (why it failed, or that it was cancelled) is left as the ending wrote it.
    """
    fields = compute_progress(instance_id).as_fields()
    JobInstance.objects.filter(id=instance_id, status__in=[JobStatus.FAILED, JobStatus.CANCELLED]).update(
        **{name: fields[name] for name in SETTLED_FIELDS}
    )


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
    return (
        WorkChunk.objects.filter(
            instance_id=instance_id, status__in=[ChunkStatus.FAILED, ChunkStatus.ERRORED], error_message__isnull=False
        )
        .order_by(failed_first, "update_time")
        .values_list("error_message", flat=True)
        .first()
    )


def _warnings(instance_id: UUID) -> str | None:
    """The job's moves between nodes (latest few, oldest first), then its chunks' distinct warnings."""
    moves = reversed(
        JobReassignment.objects.filter(instance_id=instance_id).order_by("-at", "-id")[:MAX_REASSIGNMENTS_SHOWN]
    )
    warnings = list(
        WorkChunk.objects.filter(instance_id=instance_id, warning_message__isnull=False)
        .order_by()
        .values_list("warning_message", flat=True)
        .distinct()[:MAX_WARNINGS_SHOWN]
    )
    return "\n".join([*(move.describe() for move in moves), *sorted(warnings)]) or None
