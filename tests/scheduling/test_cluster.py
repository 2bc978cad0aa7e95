"""Real beats and workers: every tick once in the cluster, local jobs in every process, the node switch,
and custom scripts picked up and dropped while everything runs.

Nothing here sleeps a fixed time and then counts: each test waits until what it expects has happened
(with a generous ceiling), then checks what must hold however late the busy machine let things happen.
A tick whose message is taken after the next tick has come is MISSED by design, so only "at most once"
and "never overlapping" are exact; "every tick" is not something a loaded 2-core machine can promise.
"""

import time
import uuid
from collections import Counter
from collections.abc import Callable

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from batch.control import start_job
from batch.models import JobInstance, WorkChunk
from jobsite.tokens import token_for
from scheduling.models import JobRun, RunOutcome
from tests.processes import (
    celery_beat,
    celery_worker,
    inspect_worker,
    scheduler_hostname,
    scheduler_worker,
    start_all,
    stop_all,
    wait_until,
    wait_until_beating,
    wait_until_ready,
)
from tests.scheduling.recorder import RECORD_FILE, read_runs

pytestmark = [pytest.mark.acceptance, pytest.mark.django_db(transaction=True)]

FAST_JOB = "tests.scheduling.periodic_every_two_seconds.clustered_every_two_seconds"
LOCAL_JOB = "tests.scheduling.periodic_every_two_seconds.local_every_second"
SLOW_JOB = "tests.scheduling.periodic_overlapping.clustered_slow"
CEILING = 180  # seconds: what the waits below allow on a loaded machine; on an idle one they take ~15-25 s


def unique(prefix: str = "test") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def cluster_env(tmp_path, **extra: str) -> dict[str, str]:
    return {
        "SCHEDULER_QUEUE": unique(),
        RECORD_FILE: str(tmp_path / "runs.jsonl"),
        "SCHEDULER_THREAD_COUNT": "2",
        **extra,
    }


def pool_pids(node: str, worker) -> set[int]:
    return set(inspect_worker(scheduler_hostname(node, worker), "stats")["pool"]["processes"])


def outcomes(job: str) -> Counter:
    return Counter(JobRun.objects.filter(job_name=job).values_list("outcome", flat=True))


def test_two_beats_and_three_workers_run_every_tick_at_most_once_and_local_jobs_in_every_process(processes, tmp_path):
    env = cluster_env(
        tmp_path,
        SCHEDULING_JOB_MODULES="tests.scheduling.periodic_every_two_seconds,tests.scheduling.periodic_overlapping",
    )
    nodes = [unique("node") for _ in range(3)]
    workers = [scheduler_worker({**env, "NODE_ID": node}, name=f"scheduler-{node}") for node in nodes]
    beats = [celery_beat({**env, "NODE_ID": node}, name=f"beat-{node}") for node in nodes[:2]]
    processes.extend(workers + beats)
    start_all(workers, wait_until_ready)
    start_all(beats, wait_until_beating)
    pids_by_node = {node: pool_pids(node, worker) for node, worker in zip(nodes, workers)}
    record = tmp_path / "runs.jsonl"

    def local_runs() -> Counter:
        return Counter((r["node"], r["pid"]) for r in read_runs(record) if r["job"] == LOCAL_JOB)

    def taken() -> int:
        return sum(worker.output().count(": taken") for worker in workers)

    wait_until(lambda: outcomes(FAST_JOB)[RunOutcome.SUCCEEDED] >= 12, CEILING, message=lambda: outcomes(FAST_JOB))
    wait_until(
        lambda: outcomes(SLOW_JOB)[RunOutcome.SUCCEEDED] >= 4 and outcomes(SLOW_JOB)[RunOutcome.SKIPPED] >= 4,
        CEILING,
        message=lambda: outcomes(SLOW_JOB),
    )
    wait_until(
        lambda: all(local_runs()[(node, pid)] >= 5 for node, pids in pids_by_node.items() for pid in pids),
        CEILING,
        message=lambda: (pids_by_node, local_runs()),
    )
    wait_until(lambda: taken() >= 6, CEILING, message="duplicate ticks turned away")
    stop_all(beats + workers)
    records = read_runs(record)

    # Each tick ran at most once: one row, and one execution for each run that succeeded (or was still running
    # when the processes were stopped), none for a tick missed or skipped (a run late under load).
    fast_rows = list(JobRun.objects.filter(job_name=FAST_JOB).values_list("tick", "outcome"))
    assert len({tick for tick, _ in fast_rows}) == len(fast_rows)
    assert {outcome for _, outcome in fast_rows} <= {
        RunOutcome.SUCCEEDED,
        RunOutcome.MISSED,
        RunOutcome.SKIPPED,
        RunOutcome.RUNNING,
    }
    executions = Counter(r["tick"] for r in records if r["job"] == FAST_JOB)
    assert max(executions.values()) == 1
    succeeded = {tick.isoformat() for tick, outcome in fast_rows if outcome == RunOutcome.SUCCEEDED}
    cut_off = {tick.isoformat() for tick, outcome in fast_rows if outcome == RunOutcome.RUNNING}
    assert succeeded <= set(executions) <= succeeded | cut_off
    # ... although both beats sent the ticks: the second message of a tick found it taken.
    for beat in beats:
        assert f"Sending due task {FAST_JOB}" in beat.output()

    # The local job ran in every pool process of every worker.
    assert all(len(pids) == 2 for pids in pids_by_node.values())

    # The 3 s job ticking every 2 s never overlapped itself: a tick that came mid-run was skipped.
    slow = sorted((r["started"], r["finished"]) for r in records if r["job"] == SLOW_JOB)
    assert len(slow) >= outcomes(SLOW_JOB)[RunOutcome.SUCCEEDED]
    assert all(earlier_end <= later_start for (_, earlier_end), (later_start, _) in zip(slow, slow[1:]))


def test_a_node_with_job_scheduling_off_runs_nothing_scheduled_but_still_runs_batch_chunks(processes, tmp_path):
    env = cluster_env(tmp_path, SCHEDULING_JOB_MODULES="tests.scheduling.periodic_every_two_seconds")
    primary, secondary = unique("primary"), unique("secondary")
    off = {**env, "NODE_ID": secondary, "JOB_SCHEDULING": "false"}
    secondary_scheduler = scheduler_worker(off, name="scheduler-secondary")
    secondary_beat = celery_beat(off, name="beat-secondary")
    secondary_batch = celery_worker(env=off, name="batch-secondary", wait=False)
    primary_scheduler = scheduler_worker({**env, "NODE_ID": primary}, name="scheduler-primary")
    primary_beat = celery_beat({**env, "NODE_ID": primary}, name="beat-primary")
    processes.extend([secondary_scheduler, secondary_beat, secondary_batch, primary_scheduler, primary_beat])
    start_all([secondary_scheduler, primary_scheduler, secondary_batch], wait_until_ready)
    start_all([secondary_beat, primary_beat], wait_until_beating)

    instance = start_job("DIAGNOSTIC_NOOP", {"chunks": 4, "sleep_ms": 10}, node_id=secondary)
    wait_until(
        lambda: JobInstance.objects.get(id=instance.id).status == "COMPLETED",
        CEILING,
        message=lambda: JobInstance.objects.get(id=instance.id),
    )
    record = tmp_path / "runs.jsonl"

    def runs_by_node() -> Counter:
        return Counter(JobRun.objects.values_list("node", flat=True))

    def local_nodes() -> Counter:
        return Counter(r["node"] for r in read_runs(record) if r["job"] == LOCAL_JOB)

    wait_until(
        lambda: runs_by_node()[primary] >= 3 and local_nodes()[primary] >= 10,
        CEILING,
        message=lambda: (runs_by_node(), local_nodes()),
    )

    workers = set(WorkChunk.objects.filter(instance_id=instance.id).values_list("worker", flat=True))
    assert workers and all(worker.startswith("batch-secondary-") for worker in workers), workers
    secondary_host = scheduler_hostname(secondary, secondary_scheduler)
    assert inspect_worker(secondary_host, "active_queues") == []
    assert "this beat schedules nothing" in secondary_beat.output()
    assert "Sending due task" not in secondary_beat.output()
    assert runs_by_node()[secondary] == 0
    assert local_nodes()[secondary] == 0


LIVE_SCRIPT = """\
from scheduling import scheduled
from tests.scheduling.recorder import record_run


@scheduled(every_seconds=1)
def clustered_every_second():
    record_run()


@scheduled(every_seconds=1, clustered=False)
def local_every_second():
    record_run()
"""


QUIET_SECONDS = 10  # both jobs run every second; this long without a run means they stopped


def quiet_for(seconds: float, count: Callable[[], int]) -> Callable[[], bool]:
    """A condition: `count()` has not changed for `seconds` (time.monotonic, in this process)."""
    last = {"count": -1, "since": 0.0}

    def condition() -> bool:
        now, current = time.monotonic(), count()
        if current != last["count"]:
            last.update(count=current, since=now)
        return now - last["since"] >= seconds

    return condition


def test_a_script_uploaded_while_everything_runs_is_picked_up_and_stops_when_disabled(processes, tmp_path, settings):
    env = cluster_env(tmp_path, CUSTOM_SCRIPTS_ENABLED="true")
    settings.CUSTOM_SCRIPTS_ENABLED = True
    worker, beat = scheduler_worker(env), celery_beat(env)
    processes.extend([worker, beat])
    wait_until_ready(worker)
    wait_until_beating(beat)
    root = get_user_model().objects.create_superuser("root", password="pw")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token_for(root)}")
    record = tmp_path / "runs.jsonl"

    def ran(kind: bool) -> list[dict]:
        return [r for r in read_runs(record) if r["clustered"] is kind]

    uploaded = time.monotonic()
    assert client.post("/control/scripts", {"name": "live", "source": LIVE_SCRIPT}, format="json").status_code == 201
    wait_until(lambda: ran(True) and ran(False), CEILING, message="both jobs of the script ran")
    picked_up_after = time.monotonic() - uploaded
    assert {r["job"] for r in read_runs(record)} == {
        "scripts.live.clustered_every_second",
        "scripts.live.local_every_second",
    }

    assert client.put("/control/scripts/live", {"enabled": False}, format="json").status_code == 200
    wait_until(
        quiet_for(QUIET_SECONDS, lambda: len(read_runs(record))),
        CEILING,
        message="the disabled script's jobs kept running",
    )
    print(f"custom script: both jobs ran {picked_up_after:.1f} s after upload")
