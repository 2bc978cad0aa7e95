"""Real beats and workers: every tick once in the cluster, local jobs in every process, the node switch,
and custom scripts picked up and dropped while everything runs."""
import time
import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest
from django.contrib.auth import get_user_model
from jobsite.tokens import token_for
from rest_framework.test import APIClient

from batch.queues import work_notification_queue
from jobsite.celery import app, ping
from scheduling.models import JobRun, RunOutcome
from scheduling.schedules import EverySeconds
from tests.processes import celery_worker
from tests.scheduling.processes import (
    celery_beat, scheduler_hostname, scheduler_worker, wait_until_beating, wait_until_ready,
)
from tests.scheduling.recorder import RECORD_FILE, read_runs

pytestmark = [pytest.mark.acceptance, pytest.mark.django_db(transaction=True)]

FAST_JOB = "tests.scheduling.periodic_every_two_seconds.clustered_every_two_seconds"
LOCAL_JOB = "tests.scheduling.periodic_every_two_seconds.local_every_second"
SLOW_JOB = "tests.scheduling.periodic_overlapping.clustered_slow"
WINDOW_SECONDS = 30  # the 30 s; the processes mostly sleep, so two cores cope
SETTLE = timedelta(seconds=3)  # ticks this close to start or stop are left out: processes were still coming up


def unique(prefix: str = "test") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def cluster_env(tmp_path, **extra: str) -> dict[str, str]:
    return {"SCHEDULER_QUEUE": unique(), RECORD_FILE: str(tmp_path / "runs.jsonl"), "SCHEDULER_THREAD_COUNT": "2",
            **extra}


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def ticks_every_two_seconds(start: datetime, end: datetime) -> list[datetime]:
    ticks, tick = [], EverySeconds(2).next_tick_after(start)
    while tick <= end:
        ticks.append(tick)
        tick += timedelta(seconds=2)
    return ticks


def pool_pids(node: str, worker) -> set[int]:
    hostname = scheduler_hostname(node, worker)
    stats = app.control.inspect(destination=[hostname], timeout=5).stats() or {}
    return set(stats[hostname]["pool"]["processes"])


def test_two_beats_and_three_workers_run_every_tick_once_and_local_jobs_in_every_process(processes, tmp_path):
    env = cluster_env(tmp_path, SCHEDULING_JOB_MODULES="tests.scheduling.periodic_every_two_seconds,"
                                                       "tests.scheduling.periodic_overlapping")
    nodes = [unique("node") for _ in range(3)]
    workers = [scheduler_worker({**env, "NODE_ID": node}, name=f"scheduler-{node}") for node in nodes]
    beats = [celery_beat({**env, "NODE_ID": node}, name=f"beat-{node}") for node in nodes[:2]]
    processes.extend(workers + beats)
    for worker in workers:
        wait_until_ready(worker)
    for beat in beats:
        wait_until_beating(beat)
    started = utc_now()
    time.sleep(WINDOW_SECONDS)
    stopped = utc_now()
    pids_by_node = {node: pool_pids(node, worker) for node, worker in zip(nodes, workers)}

    # Every tick of the window ran exactly once: one row, succeeded, and one execution of the function.
    window = ticks_every_two_seconds(started + SETTLE, stopped - SETTLE)
    assert len(window) >= 12
    rows = {run.tick: run for run in JobRun.objects.filter(job_name=FAST_JOB, tick__in=window)}
    assert sorted(rows) == window
    assert {run.outcome for run in rows.values()} == {RunOutcome.SUCCEEDED}
    records = read_runs(tmp_path / "runs.jsonl")
    executions = Counter(r["tick"] for r in records if r["job"] == FAST_JOB)
    assert max(executions.values()) == 1
    assert all(executions[tick.isoformat()] == 1 for tick in window)
    # ... although both beats sent every tick, and the workers turned the duplicates away.
    for beat in beats:
        assert beat.output().count(f"Sending due task {FAST_JOB}") >= len(window)
    assert sum(worker.output().count(": taken") for worker in workers) >= len(window) // 2

    # The local job ran in every pool process of every worker, about once a second.
    local_runs = Counter((r["node"], r["pid"]) for r in records if r["job"] == LOCAL_JOB)
    for node, pids in pids_by_node.items():
        assert len(pids) == 2
        for pid in pids:
            assert local_runs[(node, pid)] >= WINDOW_SECONDS // 2, (node, pid, local_runs)

    # The 3 s job ticking every 2 s never overlapped itself: the tick that came mid-run was skipped.
    slow = sorted((r["started"], r["finished"]) for r in records if r["job"] == SLOW_JOB)
    assert len(slow) >= 4
    assert all(earlier_end <= later_start for (_, earlier_end), (later_start, _) in zip(slow, slow[1:]))
    slow_outcomes = Counter(JobRun.objects.filter(job_name=SLOW_JOB, tick__in=window).values_list("outcome", flat=True))
    assert slow_outcomes[RunOutcome.SKIPPED] >= 4
    assert slow_outcomes[RunOutcome.SUCCEEDED] >= 4


def test_a_node_with_job_scheduling_off_runs_nothing_scheduled_but_still_runs_batch_work(processes, tmp_path, settings):
    env = cluster_env(tmp_path, SCHEDULING_JOB_MODULES="tests.scheduling.periodic_every_two_seconds")
    primary, secondary = unique("primary"), unique("secondary")
    off = {**env, "NODE_ID": secondary, "JOB_SCHEDULING": "false"}
    secondary_scheduler = scheduler_worker(off, name="scheduler-secondary")
    secondary_beat = celery_beat(off, name="beat-secondary")
    primary_scheduler = scheduler_worker({**env, "NODE_ID": primary}, name="scheduler-primary")
    primary_beat = celery_beat({**env, "NODE_ID": primary}, name="beat-primary")
    processes.extend([secondary_scheduler, secondary_beat, primary_scheduler, primary_beat])
    processes.append(celery_worker(env=off, name="batch-secondary"))
    for process in (secondary_scheduler, primary_scheduler):
        wait_until_ready(process)
    for process in (secondary_beat, primary_beat):
        wait_until_beating(process)
    time.sleep(10)

    batch_reply = ping.apply_async(args=["chunk"], queue=work_notification_queue(secondary, settings.MODULE_ID))
    assert batch_reply.get(timeout=30)["node"] == secondary
    secondary_host = scheduler_hostname(secondary, secondary_scheduler)
    queues = app.control.inspect(destination=[secondary_host], timeout=5).active_queues()
    assert queues == {secondary_host: []}
    assert "this beat schedules nothing" in secondary_beat.output()
    assert "Sending due task" not in secondary_beat.output()

    runs_by_node = Counter(JobRun.objects.values_list("node", flat=True))
    assert runs_by_node[primary] >= 3 and runs_by_node[secondary] == 0
    local_nodes = Counter(r["node"] for r in read_runs(tmp_path / "runs.jsonl") if r["job"] == LOCAL_JOB)
    assert local_nodes[primary] >= 10 and local_nodes[secondary] == 0


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


def wait_for(condition, timeout: float) -> float:
    """Seconds it took `condition()` to hold; fails after `timeout`."""
    began = time.monotonic()
    while not condition():
        assert time.monotonic() - began < timeout, f"not within {timeout} s"
        time.sleep(0.2)
    return time.monotonic() - began


def test_a_script_uploaded_while_everything_runs_is_picked_up_within_seconds_and_stops_when_disabled(
    processes, tmp_path, settings
):
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

    assert client.post("/control/scripts", {"name": "live", "source": LIVE_SCRIPT}, format="json").status_code == 201
    clustered_after = wait_for(lambda: ran(True), timeout=15)
    local_after = wait_for(lambda: ran(False), timeout=15)
    assert {r["job"] for r in read_runs(record)} == {"scripts.live.clustered_every_second",
                                                     "scripts.live.local_every_second"}

    assert client.put("/control/scripts/live", {"enabled": False}, format="json").status_code == 200
    time.sleep(8)  # beat reloads within its 5 s loop, local runners within their 2 s poll
    settled = len(read_runs(record))
    time.sleep(4)
    assert len(read_runs(record)) == settled
    print(f"custom script: first clustered run {clustered_after:.1f} s, first local run within "
          f"{clustered_after + local_after:.1f} s after upload")
