"""Real Heavylift processes for acceptance tests: celery workers, beat, web, Flower, as subprocesses.

They run against the test database that pytest-django created, so the test itself must use
`transactional_db` (its writes must be committed for another process to see them).
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from django.db import connection

PROJECT_DIR = Path(__file__).resolve().parent.parent


def subprocess_database_url() -> str:
    """The URL of the database pytest-django created, for processes started by a test."""
    params = connection.settings_dict
    from urllib.parse import quote

    host = quote(params["HOST"] or "", safe="") if params["HOST"] else ""
    port = f":{params['PORT']}" if params["PORT"] else ""
    password = f":{quote(params['PASSWORD'])}" if params["PASSWORD"] else ""
    return f"postgresql://{params['USER']}{password}@{host}{port}/{params['NAME']}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Process:
    """One subprocess with its output in a temporary log file, stopped at the end of the test."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None, name: str = "process"):
        self.name = name
        self.log = Path(tempfile.mkstemp(prefix=f"heavylift-{name}-", suffix=".log")[1])
        full_env = {**os.environ, "DATABASE_URL": subprocess_database_url(), "PYTHONUNBUFFERED": "1", **(env or {})}
        with self.log.open("wb") as out:
            self.popen = subprocess.Popen(
                argv, cwd=PROJECT_DIR, env=full_env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for_output(self, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output():
            if self.popen.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.popen.returncode}:\n{self.output()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} did not print {text!r} in {timeout}s:\n{self.output()[-3000:]}")
            time.sleep(0.1)

    def signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.popen.pid, sig)
        except ProcessLookupError:
            pass

    def stop(self, timeout: float = 15) -> None:
        if self.popen.poll() is None:
            self.signal_group(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.signal_group(signal.SIGKILL)
                self.popen.wait(5)


def celery_worker(
    env: dict[str, str] | None = None, queues: list[str] | None = None, concurrency: int = 2, name: str = "worker"
) -> Process:
    """Start `celery worker` and return once it is consuming."""
    argv = [
        sys.executable, "-m", "celery", "-A", "jobsite", "worker", "--loglevel", "INFO",
        "--concurrency", str(concurrency), "--hostname", f"{name}-{os.getpid()}-{time.monotonic_ns()}@%h",
        "--without-mingle", "--without-gossip",
    ]
    if queues:
        argv += ["--queues", ",".join(queues)]
    process = Process(argv, env=env, name=name)
    process.wait_for_output(" ready.", timeout=60)
    return process
