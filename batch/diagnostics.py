"""Diagnostic jobs for demos, tests and benchmarks: they do nothing but emit, sleep and count."""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from typing import Any

from batch.api import DataSink, JobDefinition, JobDefinitionBuilder, StepContext

SLEEP_SLICE_SECONDS = 0.1  # a sleeping step checks for a cancel this often


def generate_chunks(context: StepContext, sink: DataSink) -> int:
    for index in range(context.parameters["chunks"]):
        sink.accept({"index": index})
    return 0


def sleep_and_count(context: StepContext, sink: DataSink) -> int:
    if context.data["index"] == context.parameters["hang_at_chunk"] and context.attempt == 1:
        hang_forever()
    if context.data["index"] == context.parameters.get("spin_at_chunk", -1) and context.attempt == 1:
        spin_holding_the_gil()
    deadline = time.monotonic() + context.parameters["sleep_ms"] / 1000
    while (remaining := deadline - time.monotonic()) > 0:
        context.check_cancelled()
        time.sleep(min(remaining, SLEEP_SLICE_SECONDS))
    return context.parameters["records_per_chunk"]


def hang_forever() -> None:
    """What a step blocked on a dead socket or a lock looks like: alive, deaf to cancels, never returning."""
    while True:
        time.sleep(3600)


def spin_holding_the_gil() -> None:
    """What a catastrophic regular expression looks like: Python's `re` backtracks 2^60 times in C without
    releasing the GIL, so no other thread of the process (the lease keeper) runs until it is killed."""
    re.match(r"^(a+)+$", "a" * 60 + "!")


def sleep_count_and_pass_on(context: StepContext, sink: DataSink) -> int:
    records = sleep_and_count(context, sink)
    sink.accept({"index": context.data["index"], "records": records})
    return records


def sum_records(context: StepContext, inputs: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    chunks = records = 0
    for data in inputs:
        chunks += 1
        records += data["records"]
    return {"chunks": chunks, "records": records}


def _with_parameters(builder: JobDefinitionBuilder) -> JobDefinitionBuilder:
    return (
        builder.parameter(
            "chunks", int, default=10, minimum=0, maximum=1_000_000, description="chunks the first step emits"
        )
        .parameter("sleep_ms", int, default=0, minimum=0, maximum=3_600_000, description="how long each chunk sleeps")
        .parameter("records_per_chunk", int, default=1, minimum=0, description="records each chunk reports")
        .parameter(
            "hang_at_chunk",
            int,
            default=-1,
            minimum=-1,
            description="this chunk hangs forever on its first attempt (-1: none); see BATCH_MAX_CHUNK_SECONDS",
        )
    )


DIAGNOSTIC_NOOP: JobDefinition = (
    _with_parameters(JobDefinitionBuilder("DIAGNOSTIC_NOOP", 1, "Emits chunks that sleep and count (not gated)."))
    .first_step("generate-chunks", generate_chunks, "emits `chunks` chunks")
    .last_step("sleep", sleep_and_count, "sleeps `sleep_ms`, reports `records_per_chunk`")
    .build()
)

# A definition of its own (not a new parameter of DIAGNOSTIC_NOOP v1, whose shape is recorded): the recycling test.
DIAGNOSTIC_SPIN: JobDefinition = (
    _with_parameters(
        JobDefinitionBuilder(
            "DIAGNOSTIC_SPIN",
            1,
            "DIAGNOSTIC_NOOP whose chunk `spin_at_chunk` spins "
            "holding the GIL on its first attempt (see batch.recycling).",
        )
    )
    .parameter("spin_at_chunk", int, default=-1, minimum=-1, description="the chunk that spins (-1: none)")
    .first_step("generate-chunks", generate_chunks, "emits `chunks` chunks")
    .last_step("sleep", sleep_and_count, "sleeps `sleep_ms` (or spins), reports `records_per_chunk`")
    .build()
)

DIAGNOSTIC_NOOP_GATED: JobDefinition = (
    _with_parameters(
        JobDefinitionBuilder(
            "DIAGNOSTIC_NOOP_GATED", 1, "Emits chunks that sleep and count, then sums them (gated, reduced)."
        )
    )
    .gated()
    .first_step("generate-chunks", generate_chunks, "emits `chunks` chunks")
    .intermediate_step("sleep", sleep_count_and_pass_on, "sleeps `sleep_ms`, reports `records_per_chunk`")
    .reduction_step("sum-records", sum_records, "sums the records into the report")
    .build()
)
