"""LOG_FORMAT=json for log shippers: every line a worker writes while it runs a chunk names the job, the chunk,
the step and the node (issue #24)."""

from __future__ import annotations

import io
import json
import logging

import pytest

from batch.control import start_job
from batch.log_context import ChunkLogFilter
from batch.models import WorkChunk
from heavylift.logs import JsonFormatter
from tests.batch.helpers import emit

logger = logging.getLogger("tests.batch.a_step")


@pytest.fixture
def json_lines():
    """The JSON lines written meanwhile by a handler configured as LOG_FORMAT=json configures it."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(ChunkLogFilter())
    logger.addHandler(handler)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    logger.removeHandler(handler)


def logging_step(context, sink) -> int:
    logger.warning("working on %s", context.data["n"], extra={"records": 1})
    return 1


@pytest.mark.django_db(transaction=True)  # the engine's claims and announcements commit
def test_a_step_logs_with_its_job_chunk_step_and_node_and_other_lines_with_the_node_only(
    define_job, bus, json_lines, settings
):
    job = define_job(lambda b: b.first_step("plan", emit(1)).last_step("work", logging_step))
    instance_id = start_job(job.id, {}).id
    bus.drain()
    logger.warning("between chunks")

    during, between = json_lines()
    chunk = WorkChunk.objects.get(instance_id=instance_id, target_step_id="work")
    assert during["message"] == "working on 0" and during["level"] == "WARNING" and during["records"] == 1
    assert (during["job_id"], during["chunk_id"], during["step"], during["node"]) == (
        str(instance_id),
        str(chunk.id),
        "work",
        settings.NODE_ID,
    )
    assert during["time"].endswith("+00:00") and during["logger"] == "tests.batch.a_step"
    assert between["node"] == settings.NODE_ID and "job_id" not in between and "chunk_id" not in between


def test_an_exception_is_one_json_line_with_its_traceback(json_lines):
    try:
        raise ValueError("bad input\non two lines")
    except ValueError:
        logger.exception("it broke")

    [line] = json_lines()
    assert line["message"] == "it broke" and "ValueError: bad input\non two lines" in line["exception"]
