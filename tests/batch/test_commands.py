"""Management commands: thin wrappers that print results and turn every refusal into one clear line."""

import io
import json
import subprocess
import sys
import threading

import pytest
from django.core.management import CommandError, call_command

from batch.control import start_job
from batch.exceptions import JobFailed
from batch.models import JobInstance
from batch.statuses import ENDED_JOB_STATUSES, ChunkStatus, JobStatus
from tests.batch.factories import JobInstanceFactory, WorkChunkFactory
from tests.batch.helpers import emit
from tests.processes import PROJECT_DIR

pytestmark = pytest.mark.django_db(transaction=True)


def run(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.fixture
def worker_thread(bus):
    """Stands in for a worker process: delivers the bus's messages until every job has ended."""
    stop = threading.Event()

    def work():
        from django.db import connection

        while not stop.is_set():
            bus.drain()
            if JobInstance.objects.exists() and not JobInstance.objects.exclude(status__in=ENDED_JOB_STATUSES).exists():
                break
            stop.wait(0.05)
        connection.close()

    thread = threading.Thread(target=work)
    thread.start()
    yield
    stop.set()
    thread.join()


def test_start_job_prints_the_instance_id(bus):
    out, _ = run("start_job", "DIAGNOSTIC_NOOP", "--params", '{"chunks": 2}')

    instance = JobInstance.objects.get(id=out.strip())
    assert instance.parameters["chunks"] == 2
    assert instance.started_by.startswith("cli:")


def test_start_job_wait_shows_progress_and_ends_when_the_job_completes(worker_thread):
    out, err = run("start_job", "DIAGNOSTIC_NOOP_GATED", "--params", '{"chunks": 5, "records_per_chunk": 3}', "--wait")

    instance_id, summary = out.strip().splitlines()
    assert JobInstance.objects.get(id=instance_id).status == JobStatus.COMPLETED
    assert summary == 'COMPLETED: 15 records, report {"chunks": 5, "records": 15}'
    assert "chunks" in err and "rec/s" in err and "ETA" in err


def test_start_job_wait_fails_when_the_job_fails(worker_thread, define_job):
    def broken(context, sink) -> int:
        raise JobFailed("source unreachable")

    job = define_job(lambda b: b.first_step("plan", emit(1)).last_step("work", broken))

    with pytest.raises(CommandError, match="FAILED: source unreachable"):
        run("start_job", job.id, "--wait")


@pytest.mark.parametrize(
    "args, message",
    [
        (["NOPE"], "unknown job definition 'NOPE'; known: .*DIAGNOSTIC_NOOP, DIAGNOSTIC_NOOP_GATED"),
        (["DIAGNOSTIC_NOOP", "--params", "{chunks: 1}"], "--params is not valid JSON"),
        (
            ["DIAGNOSTIC_NOOP", "--params", '{"chunks": -1, "x": 1}'],
            "invalid parameters: unknown parameter 'x'; 'chunks' must be at least 0, got -1",
        ),
        (["DIAGNOSTIC_NOOP", "--max-concurrent-chunks", "0"], "max concurrent chunks must be a positive integer"),
    ],
)
def test_start_job_refuses_bad_input_and_writes_nothing(args, message):
    with pytest.raises(CommandError, match=message.replace("{", r"\{")):
        run("start_job", *args)
    assert not JobInstance.objects.exists()


def test_job_status_prints_a_summary_or_the_api_json(bus):
    instance = start_job("DIAGNOSTIC_NOOP", {"chunks": 1})

    human, _ = run("job_status", str(instance.id))
    as_json, _ = run("job_status", str(instance.id), "--json")

    assert f"{instance.id}  DIAGNOSTIC_NOOP v1  QUEUED" in human
    assert "step generate-chunks: QUEUED 1" in human
    shown = json.loads(as_json)
    assert shown["instanceId"] == str(instance.id) and shown["jobDefinitionId"] == "DIAGNOSTIC_NOOP"
    assert shown["steps"][0] == {"stepId": "generate-chunks", "chunks": {"QUEUED": 1}}


def test_list_jobs_filters_by_status():
    running = JobInstanceFactory(status=JobStatus.IN_PROGRESS)
    JobInstanceFactory(status=JobStatus.COMPLETED)

    out, _ = run("list_jobs", "--status", "IN_PROGRESS")

    assert out.splitlines()[0].startswith(f"{running.id}  IN_PROGRESS")
    assert len(out.splitlines()) == 1
    with pytest.raises(CommandError, match="unknown status SLEEPING"):
        run("list_jobs", "--status", "SLEEPING")


def test_cancel_and_restart_a_job(bus):
    instance = JobInstanceFactory(status=JobStatus.IN_PROGRESS)
    WorkChunkFactory(instance=instance, status=ChunkStatus.QUEUED)

    assert run("cancel_job", str(instance.id))[0].strip() == f"{instance.id} CANCELLED"
    with pytest.raises(CommandError, match="has already ended: it is CANCELLED"):
        run("cancel_job", str(instance.id))
    assert run("restart_job", str(instance.id))[0].strip() == f"{instance.id} IN_PROGRESS"
    with pytest.raises(CommandError, match="only FAILED or CANCELLED jobs can be restarted"):
        run("restart_job", str(instance.id))


def test_bad_input_is_one_line_on_stderr_and_a_non_zero_exit():
    result = subprocess.run(
        [sys.executable, "manage.py", "cancel_job", "no-such-job"], cwd=PROJECT_DIR, capture_output=True, text=True
    )

    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == ["CommandError: no job instance no-such-job"]


def test_reassign_jobs_moves_a_nodes_jobs_and_prints_a_line_per_job(bus):
    from batch.heartbeats import record_heartbeat

    record_heartbeat("b1", "node-b")
    instance = start_job("DIAGNOSTIC_NOOP", {"chunks": 1}, node_id="node-a")

    out, _ = run("reassign_jobs", "--from", "node-a")

    assert out.strip() == f"{instance.id} node-a -> node-b (1 waiting chunks announced)"
    assert JobInstance.objects.get(id=instance.id).node_id == "node-b"
    assert run("reassign_jobs", "--from", "node-a")[0].strip() == "no unfinished jobs on node node-a: nothing moved"


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "name the jobs to move: --from NODE or --job ID"),
        (["--job", "no-such-job"], "no job instance no-such-job"),
        (["--from", "node a"], "invalid from node 'node a'"),
        (["--from", "node-a", "--to", "node-z"], "node node-z has no batch worker of module batch seen in the last"),
    ],
)
def test_reassign_jobs_refuses_bad_input_and_moves_nothing(args, message):
    instance = JobInstanceFactory(node_id="node-a")

    with pytest.raises(CommandError, match=message):
        run("reassign_jobs", *args)
    assert JobInstance.objects.get(id=instance.id).node_id == "node-a"
