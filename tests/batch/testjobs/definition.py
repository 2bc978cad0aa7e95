import time
from pathlib import Path

from batch.api import DataSink, JobDefinitionBuilder, JobFailed, StepContext

HOLD_POLL_SECONDS = 0.05


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


LOGGED_JOB = (
    JobDefinitionBuilder("TEST_LOGGED", 1, "Writes down each chunk it finishes.")
    .parameter("chunks", int, default=10)
    .parameter("sleep_ms", int, default=0)
    .parameter("log", str, required=True)
    .parameter("fail_index", int, default=-1)
    .parameter("fail_while", str, default="/nonexistent")
    .parameter("error_index", int, default=-1)
    .parameter("hold_while", str, default="/nonexistent")
    .parameter("hold_from", int, default=0)
    .first_step("emit", emit_chunks)
    .last_step("log", sleep_then_log)
    .build()
)
