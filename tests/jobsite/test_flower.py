"""Flower shows workers and queues, and never without credentials."""
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from base64 import b64encode
from pathlib import Path

import pytest

from tests.processes import PROJECT_DIR, Process, free_port

pytestmark = [pytest.mark.acceptance, pytest.mark.django_db(transaction=True)]


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
    deadline = time.monotonic() + 30
    while True:
        try:
            status = get(url)
            break
        except (urllib.error.URLError, ConnectionError):
            assert time.monotonic() < deadline, flower.output()
            time.sleep(0.2)

    assert status == 401
    assert get(url, "ops:wrong") == 401
    assert get(url, "ops:s3cret") == 200
    assert b"s3cret" not in Path(f"/proc/{flower.popen.pid}/cmdline").read_bytes()  # `ps` shows no password


def test_flower_does_not_start_without_a_password():
    result = subprocess.run([sys.executable, "manage.py", "run_flower"], cwd=PROJECT_DIR,
                            env={**os.environ, "FLOWER_PASSWORD": ""}, capture_output=True, text=True)
    assert result.returncode != 0
    assert "FLOWER_PASSWORD is not set" in result.stderr
