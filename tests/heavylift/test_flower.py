"""Flower shows workers, queues and the chunks that errored (as failed tasks), and never without credentials."""

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from base64 import b64encode
from pathlib import Path

import pytest
import redis
from django.conf import settings

from batch.control import start_job
from batch.models import JobInstance, WorkChunk
from batch.queues import pending_notifications, work_notification_queue
from batch.statuses import ENDED_JOB_STATUSES, ChunkStatus, JobStatus
from tests.batch.helpers import unique_node
from tests.processes import (
    PROJECT_DIR,
    STARTUP_TIMEOUT,
    Process,
    celery_worker,
    free_port,
    wait_until,
)

pytestmark = [pytest.mark.acceptance, pytest.mark.django_db(transaction=True)]


def read(url: str, credentials: str) -> str:
    request = urllib.request.Request(url)
    request.add_header("Authorization", "Basic " + b64encode(credentials.encode()).decode())
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.read().decode()


def get(url: str, credentials: str | None = None) -> int:
    request = urllib.request.Request(url)
    if credentials:
        request.add_header("Authorization", "Basic " + b64encode(credentials.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_flower_refuses_requests_without_credentials(processes):
    port = free_port()
    flower = Process(
        [sys.executable, "manage.py", "run_flower"],
        env={"FLOWER_PORT": str(port), "FLOWER_USER": "ops", "FLOWER_PASSWORD": "s3cret"},
        name="flower",
    )
    processes.append(flower)
    url = f"http://127.0.0.1:{port}/"

    def answered() -> tuple[int] | None:
        try:
            return (get(url),)
        except (urllib.error.URLError, ConnectionError):
            return None

    (status,) = wait_until(answered, STARTUP_TIMEOUT, message="Flower answering")

    assert status == 401
    assert get(url, "ops:wrong") == 401
    assert get(url, "ops:s3cret") == 200
    command_line = Path(f"/proc/{flower.popen.pid}/cmdline").read_bytes()
    assert b"s3cret" not in command_line  # `ps` shows no password
    assert b"--address=127.0.0.1" in command_line, "Flower listens where the web process does (BIND_ADDRESS)"
    for open_in_flower in ("metrics", "healthcheck"):  # issue #29: Flower leaves these two open
        assert (get(url + open_in_flower), get(url + open_in_flower, "ops:s3cret")) == (401, 200), open_in_flower


def test_flower_shows_the_running_workers(processes):
    worker = celery_worker(env={"NODE_ID": f"flower-{uuid.uuid4().hex[:8]}"}, concurrency=1, name="watched")
    processes.append(worker)
    hostname = worker.output().split(" ready.")[0].rsplit(" ", 1)[-1]
    port = free_port()
    flower = Process(
        [sys.executable, "manage.py", "run_flower"],
        env={"FLOWER_PORT": str(port), "FLOWER_USER": "ops", "FLOWER_PASSWORD": "s3cret"},
        name="flower",
    )
    processes.append(flower)

    def workers_listed() -> dict | None:
        try:
            listed = json.loads(read(f"http://127.0.0.1:{port}/api/workers?refresh=1", "ops:s3cret"))
        except (urllib.error.URLError, ConnectionError, ValueError):
            return None
        # Listed first from events, its stats once an inspect answered: wait for both (a busy worker answers late).
        return listed if listed.get(hostname, {}).get("stats") else None

    listed = wait_until(workers_listed, timeout=120, message=lambda: flower.output()[-3000:])
    assert listed[hostname]["stats"]["pool"]["max-concurrency"] == 1
    # The page renders what Flower's last inspect stored, which may lag the API's refresh by one round.
    wait_until(lambda: hostname in read(f"http://127.0.0.1:{port}/workers?refresh=1", "ops:s3cret"), timeout=120)


def flower(processes: list[Process]) -> str:
    """Start Flower (user ops, password s3cret) and return its address once it answers."""
    port = free_port()
    processes.append(
        Process(
            [sys.executable, "manage.py", "run_flower"],
            name="flower",
            env={"FLOWER_PORT": str(port), "FLOWER_USER": "ops", "FLOWER_PASSWORD": "s3cret"},
        )
    )
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        try:
            return get(url, "ops:s3cret") == 200
        except (urllib.error.URLError, ConnectionError):
            return False

    wait_until(answers, timeout=120, message=lambda: processes[-1].output()[-3000:])
    return url


def test_flower_shows_chunks_that_errored_or_failed_as_failed_tasks_with_their_messages(
    processes, logged_job, tmp_path
):
    node = unique_node()
    worker = celery_worker(
        env={"NODE_ID": node, "DJANGO_SETTINGS_MODULE": "tests.batch.worker_settings"}, concurrency=1, name="erring"
    )
    processes.append(worker)
    url = flower(processes)
    # Flower switches on the worker's task events (not on by default): what runs before that it never sees.
    worker.wait_for_output("Events of group {task} enabled by remote", timeout=120)
    broken = tmp_path / "broken"
    broken.touch()
    errs_once = start_job(logged_job.id, {"chunks": 2, "log": str(tmp_path / "a"), "error_index": 0}, node_id=node)
    fails = start_job(
        logged_job.id,
        {"chunks": 1, "log": str(tmp_path / "b"), "fail_index": 0, "fail_while": str(broken)},
        node_id=node,
    )
    for instance in (errs_once, fails):
        wait_until(lambda: JobInstance.objects.get(id=instance.id).status in ENDED_JOB_STATUSES, timeout=120)
    assert JobInstance.objects.get(id=errs_once.id).status == JobStatus.COMPLETED
    assert JobInstance.objects.get(id=fails.id).status == JobStatus.FAILED
    errored = WorkChunk.objects.get(instance_id=errs_once.id, target_step_id="log", error_count__gt=0)
    failed = WorkChunk.objects.get(instance_id=fails.id, target_step_id="log")

    def failed_task(chunk_id) -> dict | None:
        tasks = json.loads(read(f"{url}/api/tasks?state=FAILURE", "ops:s3cret"))
        return next((task for task in tasks.values() if str(chunk_id) in (task.get("exception") or "")), None)

    for chunk, message in (
        (errored, "RuntimeError: chunk 0 errors on its first attempt"),
        (failed, f"chunk 0 fails while {broken} exists"),
    ):
        task = wait_until(lambda: failed_task(chunk.id), timeout=120, message=lambda: worker.output()[-3000:])
        assert task["state"] == "FAILURE" and task["name"] == "batch.work_notification"
        assert f"chunk {chunk.id}: {message}" in task["exception"]
    errored.refresh_from_db()
    assert (errored.status, errored.error_count, errored.attempts) == (ChunkStatus.COMPLETED, 1, 2), (
        "the engine retried it once; Celery did not retry, and the error counted once"
    )
    # Acknowledged though it raised: nothing of the node's queue is left waiting for redelivery.
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    queue = work_notification_queue(node, settings.MODULE_ID)
    wait_until(lambda: not any(json.loads(entry)[2] == queue for entry in broker.hvals("unacked")), timeout=60)
    assert pending_notifications(queue) == 0  # new work and work announced again


def test_flower_does_not_start_without_a_password():
    result = subprocess.run(
        [sys.executable, "manage.py", "run_flower"],
        cwd=PROJECT_DIR,
        env={**os.environ, "FLOWER_PASSWORD": ""},
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "FLOWER_PASSWORD is not set" in result.stderr
