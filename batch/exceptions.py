"""The one exception tree of the batch app. A subclass's docstring is its default message."""

from __future__ import annotations

from datetime import timedelta


class BatchError(Exception):
    """Batch engine error."""

    def __init__(self, message: str | None = None):
        super().__init__(message or (self.__doc__ or "").strip())


# --- Raised by a step to steer its chunk -------------------------------------------------------------
class StepSignal(BatchError):
    """A step's signal to the engine."""


class JobFailed(StepSignal):
    """The job cannot succeed: the chunk and the whole job fail at once, without retries."""


class RetryChunkLater(StepSignal):
    """Not ready yet: run this chunk again later (POLL_WAITING), without counting an error."""

    def __init__(self, delay: timedelta | float | None = None, message: str | None = None):
        super().__init__(message)
        self.delay = timedelta(seconds=delay) if isinstance(delay, (int, float)) else delay


class JobCancelled(StepSignal):
    """The job was cancelled while this step ran; the step stops, its chunk is released."""


# --- Reported by the engine ------------------------------------------------------------------------
class ChunksErrored(BatchError):
    """Chunks of a work message errored or failed; the engine has stored their outcomes already."""

    def __init__(self, errors: dict[str, str]):
        """`errors`: each chunk's error message by chunk id."""
        super().__init__(
            f"{len(errors)} chunk{'s' if len(errors) > 1 else ''} errored: "
            + "; ".join(f"chunk {chunk_id}: {message}" for chunk_id, message in errors.items())
        )
        self.errors = errors

    def __reduce__(self):  # rebuilt from `errors` when Celery's pool hands it from its child to the main process
        return type(self), (self.errors,)


# --- Job definitions -----------------------------------------------------------------------------------
class InvalidJobDefinition(BatchError):
    """The job definition is malformed."""


class DuplicateJobDefinition(InvalidJobDefinition):
    """A job definition with this id and version is registered already."""


class UnknownJobDefinition(BatchError):
    """No job definition is registered under this id (and version)."""


class InvalidParameters(BatchError):
    """The job parameters are invalid."""

    def __init__(self, problems: list[str]):
        super().__init__("invalid parameters: " + "; ".join(problems))
        self.problems = problems


# --- Job instances -------------------------------------------------------------------------------------
class JobNotFound(BatchError):
    """No job instance has this id."""


class JobStateConflict(BatchError):
    """The job instance is not in a status that allows this."""


# --- Nodes ---------------------------------------------------------------------------------------------
class NoLiveNode(BatchError):
    """No node with a live batch worker to move the jobs to."""
