"""Flower shows workers and queues, and never without credentials."""
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

from tests.processes import PROJECT_DIR, STARTUP_TIMEOUT, Process, celery_worker, free_port, wait_until

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
    flower = Process([sys.executable, "manage.py", "run_flower"],
                     env={"FLOWER_PORT": str(port), "FLOWER_USER": "ops", "FLOWER_PASSWORD": "s3cret"}, name="flower")
    processes.append(flower)
    url = f"http://127.0.0.1:{port}/"

    def answered() -> tuple[int] | None:
        try:
            return (get(url),)
        except (urllib.error.URLError, ConnectionError):
            return None

    status, = wait_until(answered, STARTUP_TIMEOUT, message="Flower answering")

    assert status == 401
    assert get(url, "ops:wrong") == 401
    assert get(url, "ops:s3cret") == 200
    assert b"s3cret" not in Path(f"/proc/{flower.popen.pid}/cmdline").read_bytes()  # `ps` shows no password


def test_flower_shows_the_running_workers(processes):
    worker = celery_worker(env={"NODE_ID": f"flower-{uuid.uuid4().hex[:8]}"}, concurrency=1, name="watched")
    processes.append(worker)
    hostname = worker.output().split(" ready.")[0].rsplit(" ", 1)[-1]
    port = free_port()
    flower = Process([sys.executable, "manage.py", "run_flower"],
                     env={"FLOWER_PORT": str(port), "FLOWER_USER": "ops", "FLOWER_PASSWORD": "s3cret"}, name="flower")
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


def test_flower_does_not_start_without_a_password():
    result = subprocess.run([sys.executable, "manage.py", "run_flower"], cwd=PROJECT_DIR,
                            env={**os.environ, "FLOWER_PASSWORD": ""}, capture_output=True, text=True)
    assert result.returncode != 0
    assert "FLOWER_PASSWORD is not set" in result.stderr
