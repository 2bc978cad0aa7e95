import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from batch.api import DataSink, JobDefinitionBuilder, JobFailed, StepContext

HOLD_POLL_SECONDS = 0.05
# Longer than any hold or outage a test puts a chunk through: the fault cluster's BATCH_MAX_CHUNK_SECONDS is
# a few seconds (for its hung-step test), and a step waiting out an outage is not hung.
MAX_CHUNK_SECONDS = 120


def emit_chunks(context: StepContext, sink: DataSink) -> int:
    for index in range(context.parameters["chunks"]):
        sink.accept({"index": index})
    return 0


def sleep_then_log(context: StepContext, sink: DataSink) -> int:
    """Fails fatally on `fail_index` while the file `fail_while` exists; errors on the first attempt of
    `error_index` (the engine retries it); waits while the file `hold_while` exists (so a test knows its
    chunks are running when it injects a fault); logs the index once finished."""
    index = context.data["index"]
    if index == context.parameters["error_index"] and context.attempt == 1:
        raise RuntimeError(f"chunk {index} errors on its first attempt")
    if index == context.parameters["fail_index"] and Path(context.parameters["fail_while"]).exists():
        raise JobFailed(f"chunk {index} fails while {context.parameters['fail_while']} exists")
    hold = Path(context.parameters["hold_while"])
    while index >= context.parameters["hold_from"] and hold.exists():
        context.check_cancelled()
        time.sleep(HOLD_POLL_SECONDS)
    deadline = time.monotonic() + context.parameters["sleep_ms"] / 1000
    while time.monotonic() < deadline:
        context.check_cancelled()
        time.sleep(HOLD_POLL_SECONDS)
    with open(context.parameters["log"], "a") as log:
        log.write(f"{index}\n")
    return 1


def sleep_log_and_pass_on(context: StepContext, sink: DataSink) -> int:
    """The gated job's middle step: as `sleep_then_log`, then one chunk for the reduction, written with the
    completion (so a fault there meets a completion that saves an emitted chunk)."""
    records = sleep_then_log(context, sink)
    sink.accept({"index": context.data["index"], "records": records})
    return records


def sum_records(context: StepContext, inputs: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The reduction: after its first input, waits while the file `hold_reduction_while` exists, having
    created `<that file>.reached` (so a test can break the database while the reduction reads its inputs)."""
    hold = Path(context.parameters["hold_reduction_while"])
    chunks = records = 0
    for data in inputs:
        if chunks == 0 and hold.exists():
            Path(f"{hold}.reached").touch()
            while hold.exists():
                time.sleep(HOLD_POLL_SECONDS)
        chunks += 1
        records += data["records"]
    return {"chunks": chunks, "records": records}


def _logged_parameters(builder: JobDefinitionBuilder) -> JobDefinitionBuilder:
    return (
        builder.parameter("chunks", int, default=10)
        .parameter("sleep_ms", int, default=0)
        .parameter("log", str, required=True)
        .parameter("fail_index", int, default=-1)
        .parameter("fail_while", str, default="/nonexistent")
        .parameter("error_index", int, default=-1)
        .parameter("hold_while", str, default="/nonexistent")
        .parameter("hold_from", int, default=0)
        .max_chunk_seconds(MAX_CHUNK_SECONDS)
    )


LOGGED_JOB = (
    _logged_parameters(JobDefinitionBuilder("TEST_LOGGED", 1, "Writes down each chunk it finishes."))
    .first_step("emit", emit_chunks)
    .last_step("log", sleep_then_log)
    .build()
)

LOGGED_GATED_JOB = (
    _logged_parameters(
        JobDefinitionBuilder("TEST_LOGGED_GATED", 1, "Writes down each chunk it finishes, gated, and sums them.")
    )
    .parameter("hold_reduction_while", str, default="/nonexistent")
    .gated()
    .first_step("emit", emit_chunks)
    .intermediate_step("log", sleep_log_and_pass_on)
    .reduction_step("sum", sum_records)
    .build()
)
