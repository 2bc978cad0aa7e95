"""A rolling upgrade, for real: the previous release's processes beside this release's, on one database and Redis.

The previous release is `git archive`d into a temporary directory and its worker and beat run from there with
the same settings. A job's chunks are shared by a worker of each release on one node and must each run exactly
once (counted from what the chunks wrote down); a scheduled job only this release declares must keep running
although the previous release's beat, at its start, disables every job it does not declare.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

import pytest

from batch.control import start_job
from batch.models import JobInstance, WorkChunk
from batch.statuses import JobStatus
from scheduling.clock import database_now
from scheduling.models import JobRun, RunOutcome
from tests.batch.helpers import unique_node
from tests.processes import (
    PROJECT_DIR,
    Process,
    celery_beat,
    celery_worker,
    scheduler_worker,
    start_all,
    wait_until,
    wait_until_beating,
    wait_until_ready,
)

pytestmark = [pytest.mark.acceptance, pytest.mark.django_db(transaction=True)]

PREVIOUS_RELEASE = "395d480"  # the commit this release's rolling upgrade starts from: move it on with each release
NEW_JOB = "tests.scheduling.periodic_skewed_hosts.every_five_seconds"  # declared by this release only
CEILING = 240  # seconds: five processes of two releases starting on a loaded 2-core machine


@pytest.fixture(scope="module")
def previous_release(tmp_path_factory) -> Path:
    known = subprocess.run(
        ["git", "cat-file", "-e", f"{PREVIOUS_RELEASE}^{{commit}}"], cwd=PROJECT_DIR, capture_output=True, check=False
    )
    if known.returncode != 0:
        pytest.skip(f"the previous release {PREVIOUS_RELEASE} is not in this clone's history")
    tree = tmp_path_factory.mktemp("previous-release")
    archive = subprocess.run(["git", "archive", PREVIOUS_RELEASE], cwd=PROJECT_DIR, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    return tree


def previous(tree: Path, celery_args: str, env: dict[str, str], name: str) -> Process:
    """A celery process of the previous release: run from its own tree, so that it imports its own code."""
    command = f"cd {shlex.quote(str(tree))} && exec {shlex.quote(sys.executable)} -m celery -A jobsite {celery_args}"
    return Process(["sh", "-c", command], env=env, name=name)


def test_a_worker_and_a_beat_of_the_previous_release_beside_this_ones_lose_no_job_and_no_schedule(
    processes, previous_release, logged_job, tmp_path
):
    node = unique_node()
    env = {
        "NODE_ID": node,
        "DJANGO_SETTINGS_MODULE": "tests.batch.worker_settings",
        "SCHEDULER_QUEUE": f"scheduled-{uuid.uuid4().hex[:8]}",
        "SCHEDULER_THREAD_COUNT": "1",
        "SCHEDULING_TEST_RECORD": str(tmp_path / "runs.jsonl"),
    }
    current_env = {**env, "SCHEDULING_JOB_MODULES": "tests.scheduling.periodic_skewed_hosts"}
    current = celery_worker(env=current_env, concurrency=1, name="current", wait=False)
    old = previous(
        previous_release,
        f"worker --loglevel INFO --concurrency 1 --without-mingle --without-gossip "
        f"--hostname previous-{uuid.uuid4().hex[:8]}@%h",
        env,
        "previous-worker",
    )
    scheduler, beat = scheduler_worker(current_env), celery_beat(current_env)
    processes.extend([current, old, scheduler, beat])
    start_all([current, old, scheduler], wait_until_ready)
    wait_until_beating(beat)
    wait_until(lambda: JobRun.objects.filter(job_name=NEW_JOB, outcome=RunOutcome.SUCCEEDED).exists(), CEILING)

    log = tmp_path / "chunks.log"
    instance = start_job("TEST_LOGGED", {"chunks": 30, "sleep_ms": 300, "log": str(log)}, node_id=node)
    old_beat = previous(previous_release, "beat --loglevel INFO --pidfile=", env, "previous-beat")
    processes.append(old_beat)
    wait_until_beating(old_beat)
    old_beat.wait_for_output("scheduled jobs disabled (code): ", timeout=CEILING)  # its sync, at its start
    [disabled] = [line for line in old_beat.output().splitlines() if "scheduled jobs disabled (code): " in line]
    assert NEW_JOB in disabled
    disabled_at = database_now()

    wait_until(
        lambda: JobInstance.objects.get(id=instance.id).status == JobStatus.COMPLETED,
        CEILING,
        message=lambda: Counter(WorkChunk.objects.filter(instance_id=instance.id).values_list("status", flat=True)),
    )
    ran = Counter(int(line) for line in log.read_text().split())
    assert ran == Counter(range(30)), "every chunk ran exactly once"
    workers = set(
        WorkChunk.objects.filter(instance_id=instance.id, target_step_id="log").values_list("worker", flat=True)
    )
    assert any(w.startswith("current-") for w in workers) and any(w.startswith("previous-") for w in workers), workers

    # The previous release's beat disabled the job it does not know at its start; this release's beat declared it
    # again, and it kept running.
    wait_until(
        lambda: (
            JobRun.objects.filter(job_name=NEW_JOB, outcome=RunOutcome.SUCCEEDED, tick__gt=disabled_at).count() >= 3
        ),
        CEILING,
        message="the job only this release declares stopped after the previous release's beat started",
    )
