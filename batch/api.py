"""The job-author API: everything a job (FHIR export, reindex, diagnostics, …) needs from the engine.

A job is a `JobDefinition` built with `JobDefinitionBuilder` and registered with `register()` from the
`AppConfig.ready()` of the app that owns it. Each step is a plain function
`step(context: StepContext, sink: DataSink) -> int` (records processed); a reduction step is
`reduce(context: StepContext, inputs: Iterable[dict]) -> dict` (the job's report).
See docs/batch.md, "How to write a job".
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from uuid import UUID

from batch.exceptions import (
    BatchError,
    DuplicateJobDefinition,
    InvalidJobDefinition,
    InvalidParameters,
    JobCancelled,
    JobFailed,
    RetryChunkLater,
    UnknownJobDefinition,
)

__all__ = [
    "BatchError",
    "CompletedJob",
    "DataSink",
    "DuplicateJobDefinition",
    "InvalidJobDefinition",
    "InvalidParameters",
    "JobCancelled",
    "JobDefinition",
    "JobDefinitionBuilder",
    "JobFailed",
    "Parameter",
    "ReduceFunction",
    "RestartedJob",
    "RetryChunkLater",
    "StepContext",
    "StepDefinition",
    "StepFunction",
    "StepKind",
    "StoppedJob",
    "UnknownJobDefinition",
    "register",
]

JsonObject = Mapping[str, Any]
MAX_ID_LENGTH = 100  # definition and step ids, as the reference


class StepContext(Protocol):
    """What a running step knows about its job and its chunk."""

    instance_id: UUID
    step_id: str
    chunk_id: UUID | None  # None for a reduction step, which reads many chunks
    parameters: JsonObject  # the validated job parameters, defaults filled in
    data: JsonObject | None  # the input chunk's data; None for the first step and for a reduction
    attempt: int  # 1 on the first run of this chunk (or reduction), 2 on its first retry, ...

    def is_cancelled(self) -> bool:
        """True once the job was cancelled (or this worker lost the chunk). Cheap: call it between items."""

    def check_cancelled(self) -> None:
        """Raise `JobCancelled` if `is_cancelled()`."""

    def add_warning(self, message: str) -> None:
        """Record a non-fatal problem; it is shown with the chunk and joined into the job's warnings."""

    def report_progress(self) -> None:
        """Say the step moved (a block read, a line parsed): its maximum run time (`max_chunk_seconds`, else
        BATCH_MAX_CHUNK_SECONDS) counts again from now, so slow but steady work is not taken as hung. Cheap
        (no query): call it per item of a long stream."""

    def say_waiting(self, reason: str | None, for_seconds: float = 60.0) -> None:
        """Tell the operator what this running chunk waits for (a source that is down): the job page shows it
        under "waiting for" for about `for_seconds` unless said again. None once it moves on again."""


class DataSink(Protocol):
    """Where a step emits its output: each `accept` creates one chunk for the next step."""

    def accept(self, data: JsonObject) -> None:
        """Emit one output chunk. Raises `JobCancelled` once the job is cancelled."""


StepFunction = Callable[[StepContext, DataSink], int]
ReduceFunction = Callable[[StepContext, Iterable[JsonObject]], JsonObject]


@dataclass(frozen=True)
class CompletedJob:
    """What a completion handler receives, once, after the job is COMPLETED."""

    instance_id: UUID
    parameters: JsonObject
    combined_records_processed: int
    report: JsonObject | None


CompletionHandler = Callable[[CompletedJob], None]


@dataclass(frozen=True)
class StoppedJob:
    """What a stop handler receives, once per ending, after the job ended without completing."""

    instance_id: UUID
    parameters: JsonObject
    status: str  # "FAILED" or "CANCELLED"
    error_message: str | None  # why: the last chunk's error, or "Job instance cancelled at step …"


StopHandler = Callable[[StoppedJob], None]


@dataclass(frozen=True)
class RestartedJob:
    """What a restart handler receives, once per restart, after the FAILED or CANCELLED job is IN_PROGRESS again."""

    instance_id: UUID
    parameters: JsonObject


RestartHandler = Callable[[RestartedJob], None]


class StepKind(enum.Enum):
    FIRST = "first"
    INTERMEDIATE = "intermediate"
    LAST = "last"
    REDUCTION = "reduction"


@dataclass(frozen=True)
class StepDefinition:
    id: str
    kind: StepKind
    run: StepFunction | None = None  # every kind but REDUCTION
    reduce: ReduceFunction | None = None  # REDUCTION only
    description: str = ""

    @property
    def emits(self) -> bool:
        return self.kind in (StepKind.FIRST, StepKind.INTERMEDIATE)


_JSON_TYPES: dict[type, str] = {
    bool: "true or false",
    int: "an integer",
    float: "a number",
    str: "a string",
    list: "a list",
    dict: "an object",
}


@dataclass(frozen=True)
class Parameter:
    """One job parameter: its JSON type and the checks its value must pass."""

    name: str
    type: type
    required: bool = False
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[Any, ...] | None = None
    items: type | None = None  # element type of a list parameter
    description: str = ""

    def problems(self, value: Any) -> list[str]:
        if not _is_json_type(value, self.type):
            return [f"{self.name!r} must be {_JSON_TYPES[self.type]}, got {value!r}"]
        found = []
        if self.minimum is not None and value < self.minimum:
            found.append(f"{self.name!r} must be at least {self.minimum}, got {value!r}")
        if self.maximum is not None and value > self.maximum:
            found.append(f"{self.name!r} must be at most {self.maximum}, got {value!r}")
        if self.choices is not None and value not in self.choices:
            found.append(f"{self.name!r} must be one of {', '.join(map(repr, self.choices))}, got {value!r}")
        if self.items is not None:
            found += [
                f"{self.name!r} items must be {_JSON_TYPES[self.items]}, got {item!r}"
                for item in value
                if not _is_json_type(item, self.items)
            ]
        return found


def _is_json_type(value: Any, expected: type) -> bool:
    if isinstance(value, bool):
        return expected is bool
    if expected is float:
        return isinstance(value, (int, float))
    return isinstance(value, expected)


@dataclass(frozen=True)
class JobDefinition:
    """A registered kind of job. Build it with `JobDefinitionBuilder`."""

    id: str
    version: int
    description: str
    parameters: tuple[Parameter, ...]
    steps: tuple[StepDefinition, ...]
    gated: bool = False
    max_concurrent_chunks: int | None = None  # per job instance; None: as many as the workers can take
    validator: Callable[[JsonObject], Iterable[str]] | None = None
    completion_handler: CompletionHandler | None = None
    max_chunk_seconds: int | None = None  # a chunk running longer is ERRORED and retried; None: BATCH_MAX_CHUNK_SECONDS
    counted_step_id: str | None = None  # whose records are the job's; None: the last step that runs chunks
    stop_handler: StopHandler | None = None
    restart_handler: RestartHandler | None = None

    def validate_parameters(self, raw: JsonObject | None) -> dict[str, Any]:
        """The parameters with defaults filled in; raises `InvalidParameters` listing every problem."""
        if raw is None:
            raw = {}
        if not isinstance(raw, Mapping):
            raise InvalidParameters([f"parameters must be a JSON object, got {raw!r}"])
        known = {parameter.name: parameter for parameter in self.parameters}
        problems = [f"unknown parameter {name!r}" for name in raw if name not in known]
        values: dict[str, Any] = {}
        for name, parameter in known.items():
            if name not in raw or raw[name] is None:
                if parameter.required:
                    problems.append(f"{name!r} is required")
                values[name] = parameter.default
                continue
            problems += parameter.problems(raw[name])
            values[name] = raw[name]
        if not problems and self.validator is not None:
            problems += list(self.validator(values))
        if problems:
            raise InvalidParameters(problems)
        return values

    def parameters_for_step(self, stored: JsonObject | None) -> dict[str, Any]:
        """The parameters a step sees: those stored at start, plus the defaults of parameters the starting
        process did not know. In a rolling upgrade a job started by the previous release runs its later
        steps on the new one, whose new parameters were never stored; the defaults are applied here, when a
        step reads them, not only at start."""
        values = dict(stored or {})
        for parameter in self.parameters:
            if values.get(parameter.name) is None:
                values[parameter.name] = parameter.default
        return values

    def shape(self) -> dict[str, Any]:
        """What processes of different releases must agree on to share a job of this id and version: its
        parameters and its steps. Recorded per version in tests/batch/definition_shapes.json, so a change of
        shape without a new version fails a test (docs/batch.md, *Versions*)."""
        return {
            "parameters": [
                {
                    "name": parameter.name,
                    "type": parameter.type.__name__,
                    "required": parameter.required,
                    "default": parameter.default,
                    "minimum": parameter.minimum,
                    "maximum": parameter.maximum,
                    "choices": list(parameter.choices) if parameter.choices is not None else None,
                    "items": parameter.items.__name__ if parameter.items is not None else None,
                }
                for parameter in self.parameters
            ],
            "steps": [[step.id, step.kind.name] for step in self.steps],
            "gated": self.gated,
        }

    def step(self, step_id: str) -> StepDefinition:
        for step in self.steps:
            if step.id == step_id:
                return step
        raise UnknownJobDefinition(f"job {self.id} v{self.version} has no step {step_id!r}")

    def step_after(self, step_id: str) -> StepDefinition | None:
        ids = [step.id for step in self.steps]
        position = ids.index(step_id) + 1
        return self.steps[position] if position < len(self.steps) else None

    @property
    def first_step(self) -> StepDefinition:
        return self.steps[0]

    @property
    def reduction_step(self) -> StepDefinition | None:
        return self.steps[-1] if self.steps[-1].kind is StepKind.REDUCTION else None

    @property
    def chunk_steps(self) -> tuple[StepDefinition, ...]:
        """The steps that run chunk by chunk: all but a reduction."""
        return tuple(step for step in self.steps if step.kind is not StepKind.REDUCTION)

    @property
    def records_step_id(self) -> str:
        """The step whose records are the job's records (`combined_records_processed`, its rate, the chart).

        Each step reports what it handled, so a resource read, expanded and written would count three times if
        the steps were added up. By default the last step that runs chunks counts: the job's work is done once
        that step has done it. A job whose last step handles only part of the work names another
        (`JobDefinitionBuilder.counts_records_of`)."""
        return self.counted_step_id or self.chunk_steps[-1].id


@dataclass
class JobDefinitionBuilder:
    """Declares a job step by step, like the reference's builder; `build()` checks the whole shape.

    >>> JobDefinitionBuilder("MY_JOB", 1).parameter("size", int, default=10, minimum=1) \\
    ...     .first_step("plan", plan).last_step("work", work).build()
    """

    id: str
    version: int
    description: str = ""
    _parameters: list[Parameter] = field(default_factory=list)
    _steps: list[StepDefinition] = field(default_factory=list)
    _gated: bool = False
    _max_concurrent_chunks: int | None = None
    _validator: Callable[[JsonObject], Iterable[str]] | None = None
    _completion_handler: CompletionHandler | None = None
    _max_chunk_seconds: int | None = None
    _counted_step_id: str | None = None
    _stop_handler: StopHandler | None = None
    _restart_handler: RestartHandler | None = None

    def parameter(
        self,
        name: str,
        type_: type,
        *,
        required: bool = False,
        default: Any = None,
        minimum: float | None = None,
        maximum: float | None = None,
        choices: Iterable[Any] | None = None,
        items: type | None = None,
        description: str = "",
    ) -> JobDefinitionBuilder:
        if type_ not in _JSON_TYPES or (items is not None and items not in _JSON_TYPES):
            raise InvalidJobDefinition(f"parameter {name!r}: type must be one of bool, int, float, str, list, dict")
        self._parameters.append(
            Parameter(
                name,
                type_,
                required,
                default,
                minimum,
                maximum,
                tuple(choices) if choices is not None else None,
                items,
                description,
            )
        )
        return self

    def validate_with(self, validator: Callable[[JsonObject], Iterable[str]]) -> JobDefinitionBuilder:
        """A check across parameters, run after each passed its own checks; it yields problem strings."""
        self._validator = validator
        return self

    def gated(self) -> JobDefinitionBuilder:
        """Each step starts only once every chunk of the step before it has COMPLETED."""
        self._gated = True
        return self

    def max_concurrent_chunks(self, limit: int) -> JobDefinitionBuilder:
        """At most `limit` chunks of one instance are queued or running at once, so it cannot starve others."""
        self._max_concurrent_chunks = limit
        return self

    def max_chunk_seconds(self, seconds: int) -> JobDefinitionBuilder:
        """A chunk of this job running longer is taken as hung: ERRORED, retried elsewhere, its process recycled."""
        self._max_chunk_seconds = seconds
        return self

    def counts_records_of(self, step_id: str) -> JobDefinitionBuilder:
        """The records this step reports are the job's records; by default the last step that runs chunks.

        Every step still shows its own records on the job page; only this one's make the job's total, rate and
        the dashboard's chart, so a resource is counted once however many steps handle it."""
        self._counted_step_id = step_id
        return self

    def on_completion(self, handler: CompletionHandler) -> JobDefinitionBuilder:
        """Called once, in the worker that completes the job, after it is COMPLETED."""
        self._completion_handler = handler
        return self

    def on_stop(self, handler: StopHandler) -> JobDefinitionBuilder:
        """Called once each time the job ends FAILED or CANCELLED, after that status is committed, in the process
        that ended it (a worker, maintenance, or the one that cancelled it): what the job promised outside the
        engine (a FHIR Task, a notification) can say so. A job restarted and ending again calls it again."""
        self._stop_handler = handler
        return self

    def on_restart(self, handler: RestartHandler) -> JobDefinitionBuilder:
        """Called once each time the job is restarted (`control.restart_job`), once its IN_PROGRESS is committed,
        in the process that restarted it: what the stop handler said outside the engine (a FHIR Task `failed`)
        can be taken back. A handler that raises is logged; the restart stands."""
        self._restart_handler = handler
        return self

    def first_step(self, step_id: str, run: StepFunction, description: str = "") -> JobDefinitionBuilder:
        return self._add(StepDefinition(step_id, StepKind.FIRST, run=run, description=description))

    def intermediate_step(self, step_id: str, run: StepFunction, description: str = "") -> JobDefinitionBuilder:
        return self._add(StepDefinition(step_id, StepKind.INTERMEDIATE, run=run, description=description))

    def last_step(self, step_id: str, run: StepFunction, description: str = "") -> JobDefinitionBuilder:
        return self._add(StepDefinition(step_id, StepKind.LAST, run=run, description=description))

    def reduction_step(self, step_id: str, reduce: ReduceFunction, description: str = "") -> JobDefinitionBuilder:
        """A final step that reads every chunk the step before it emitted and returns the job's report."""
        return self._add(StepDefinition(step_id, StepKind.REDUCTION, reduce=reduce, description=description))

    def _add(self, step: StepDefinition) -> JobDefinitionBuilder:
        self._steps.append(step)
        return self

    def build(self) -> JobDefinition:
        problems = self._problems()
        if problems:
            raise InvalidJobDefinition(f"job definition {self.id!r} v{self.version}: " + "; ".join(problems))
        return JobDefinition(
            self.id,
            self.version,
            self.description,
            tuple(self._parameters),
            tuple(self._steps),
            self._gated,
            self._max_concurrent_chunks,
            self._validator,
            self._completion_handler,
            self._max_chunk_seconds,
            self._counted_step_id,
            self._stop_handler,
            self._restart_handler,
        )

    def _problems(self) -> list[str]:
        found = []
        if not self.id or len(self.id) > MAX_ID_LENGTH:
            found.append(f"id must be 1 to {MAX_ID_LENGTH} characters")
        if not isinstance(self.version, int) or self.version < 1:
            found.append("version must be a positive integer")
        if self._max_concurrent_chunks is not None and self._max_concurrent_chunks < 1:
            found.append("max_concurrent_chunks must be at least 1")
        if self._max_chunk_seconds is not None and self._max_chunk_seconds < 1:
            found.append("max_chunk_seconds must be at least 1")
        names = [parameter.name for parameter in self._parameters]
        if len(set(names)) != len(names):
            found.append("parameter names must be unique")
        kinds = [step.kind for step in self._steps]
        ids = [step.id for step in self._steps]
        if len(kinds) < 2:
            found.append("a job needs at least two steps")
        elif (
            kinds[0] is not StepKind.FIRST
            or kinds[-1] not in (StepKind.LAST, StepKind.REDUCTION)
            or any(kind is not StepKind.INTERMEDIATE for kind in kinds[1:-1])
        ):
            found.append("steps must be: one first step, any intermediate steps, then a last or reduction step")
        if kinds and kinds[-1] is StepKind.REDUCTION and not self._gated:
            found.append("a reduction step is only allowed on a gated job")
        if len(set(ids)) != len(ids):
            found.append("step ids must be unique")
        if self._counted_step_id is not None and self._counted_step_id not in [
            step.id for step in self._steps if step.kind is not StepKind.REDUCTION
        ]:
            found.append(f"counts_records_of: {self._counted_step_id!r} is not a step that runs chunks")
        if any(not step_id or len(step_id) > MAX_ID_LENGTH for step_id in ids):
            found.append(f"step ids must be 1 to {MAX_ID_LENGTH} characters")
        return found


def register(definition: JobDefinition) -> None:
    """Make a definition runnable. Call it from your app's `AppConfig.ready()`; a duplicate raises."""
    from batch.registry import registry

    registry.register(definition)
