"""Real beat and scheduler-worker processes for the scheduling acceptance tests."""
from __future__ import annotations

import socket
import sys

from tests.processes import Process


def celery_beat(env: dict[str, str], name: str = "beat") -> Process:
    """`celery beat` with the project's scheduler (CELERY_BEAT_SCHEDULER); wait with `wait_until_beating`."""
    return Process([sys.executable, "-m", "celery", "-A", "jobsite", "beat", "--loglevel", "INFO", "--pidfile="],
                   env=env, name=name)


def wait_until_beating(beat: Process) -> None:
    beat.wait_for_output("beat: Starting...", timeout=60)


def scheduler_worker(env: dict[str, str], name: str = "scheduler") -> Process:
    """`manage.py run_scheduler_worker`, as the Procfile starts it; wait with `wait_until_ready`."""
    return Process([sys.executable, "manage.py", "run_scheduler_worker", "--", "--without-mingle", "--without-gossip"],
                   env=env, name=name)


def wait_until_ready(worker: Process) -> None:
    worker.wait_for_output(" ready.", timeout=60)


def scheduler_hostname(node: str, worker: Process) -> str:
    """The Celery node name run_scheduler_worker gives the worker (the command execs, keeping its pid)."""
    return f"scheduler-{node}-{worker.popen.pid}@{socket.gethostname()}"
