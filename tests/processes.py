"""Real Heavylift processes for acceptance tests and benchmarks: celery workers, beat, web, Flower, as subprocesses.

They run against the database Django is connected to: in a test the one pytest-django created, so the test
itself must use `transactional_db` (its writes must be committed for another process to see them); in a
benchmark its own (`bench.support.bench_database`).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg
from django.db import connection
from django.db.models import Model, QuerySet

if TYPE_CHECKING:  # batch's models need Django set up, which happens after tests/conftest.py imports this module
    from batch.models import JobInstance

PROJECT_DIR = Path(__file__).resolve().parent.parent
T = TypeVar("T")
FAILURE_TAIL_CHARACTERS = 3000  # the end of a log is where a process says why it failed; all of it would bury that


class ProcessLogs:
    """Where the processes of this test run write their output, and which were started, for failure reports.

    tests/conftest.py points `directory` at a pytest temporary directory (pytest keeps the last few runs' and
    removes older ones), and adds the tails of the logs of the processes a failing test ran to its report; a
    benchmark points it at its scratch directory (`bench.support.process_logs_in`).
    """

    def __init__(self) -> None:
        self.directory: Path | None = None
        self.started: list[Process] = []

    def new_log(self, name: str) -> Path:
        if self.directory is None:
            raise RuntimeError("tests.processes used outside pytest and the benchmarks: nobody set the log directory")
        return self.directory / f"{len(self.started):04d}-{name}.log"


process_logs = ProcessLogs()


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
    """One subprocess with its output in a log file of the test run (ProcessLogs), stopped at the end of the test."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None, name: str = "process"):
        self.name = name
        self.log = process_logs.new_log(name)
        full_env = {**os.environ, "DATABASE_URL": subprocess_database_url(), "PYTHONUNBUFFERED": "1", **(env or {})}
        with self.log.open("wb") as out:
            self.popen = subprocess.Popen(
                argv, cwd=PROJECT_DIR, env=full_env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        process_logs.started.append(self)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def tail(self) -> str:
        return f"--- {self.name} ({self.log}):\n{self.output()[-FAILURE_TAIL_CHARACTERS:]}"

    def wait_for_output(self, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output():
            if self.popen.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.popen.returncode}:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} did not print {text!r} in {timeout}s:\n{self.tail()}")
            time.sleep(0.1)

    def signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.popen.pid, sig)
        except ProcessLookupError:
            pass

    def stop(self, timeout: float = 15) -> None:
        stop_all([self], timeout)


def stop_all(processes: list[Process], timeout: float = 15) -> None:
    """SIGTERM every process at once (their warm shutdowns overlap), SIGKILL what is still up after `timeout`."""
    running = [process for process in processes if process.popen.poll() is None]
    for process in running:
        process.signal_group(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for process in running:
        try:
            process.popen.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.signal_group(signal.SIGKILL)
            process.popen.wait(5)


STARTUP_TIMEOUT = 120  # a process importing Django and Celery on a loaded 2-core machine


def wait_until(
    condition: Callable[[], T],
    timeout: float,
    while_waiting: Callable[[], object] = lambda: None,
    message: str | Callable[[], str] = "",
) -> T:
    """Poll `condition()` until it returns something truthy (returned); fail after `timeout` seconds.

    Tests wait for what must happen, with a ceiling far above what it takes on a loaded machine, instead
    of sleeping a fixed time and hoping.
    """
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {message() if callable(message) else message}")
        while_waiting()
        time.sleep(0.2)
    return result


def celery_worker(
    env: dict[str, str] | None = None,
    queues: list[str] | None = None,
    concurrency: int | None = 2,
    name: str = "worker",
    wait: bool = True,
) -> Process:
    """Start `celery worker` and (unless `wait=False`) return once it is consuming.

    `concurrency=None` leaves the pool size to the settings (BATCH_MAX_THREADS), as the Procfile does.
    The node name is `<name>-<pid>-<ns>@host`, unique, so a test can address this worker alone.
    """
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "heavylift",
        "worker",
        "--loglevel",
        "INFO",
        "--hostname",
        f"{name}-{os.getpid()}-{time.monotonic_ns()}@%h",
        "--without-mingle",
        "--without-gossip",
    ]
    if concurrency is not None:
        argv += ["--concurrency", str(concurrency)]
    if queues:
        argv += ["--queues", ",".join(queues)]
    process = Process(argv, env=env, name=name)
    if wait:
        wait_until_ready(process)
    return process


def node_workers(processes: list[Process], node: str, *names: str, **env: str) -> list[Process]:
    """One single-process worker per name consuming `node`'s queue, with 3 s leases (a killed worker's chunk
    is free again soon), added to `processes`; returned once all consume."""
    from batch.queues import work_notification_queue

    environment = {"NODE_ID": node, "JOB_SCHEDULING": "false", "BATCH_LEASE_SECONDS": "3", **env}
    started = [
        celery_worker(env=environment, queues=[work_notification_queue(node)], concurrency=1, name=name, wait=False)
        for name in names
    ]
    processes.extend(started)
    start_all(started, wait_until_ready)
    return started


def chunks_held_by(worker: Process, job_id: Any, *step_ids: str) -> QuerySet:
    """The job's chunks of these steps that `worker` (started by `celery_worker`) runs now: what
    `kill_while_it_holds` waits for."""
    from batch.models import WorkChunk
    from batch.statuses import ChunkStatus

    return WorkChunk.objects.filter(
        instance_id=job_id,
        status=ChunkStatus.IN_PROGRESS,
        target_step_id__in=step_ids,
        worker__startswith=worker.name + "-",
    )


def wait_for_the_end(job_id: Any, timeout: float) -> JobInstance:
    """The job's row once it has ended. Runs the maintenance pass (beat's job) meanwhile: it retries the chunks
    whose worker stopped renewing their leases."""
    from batch.maintenance import run_maintenance_pass
    from batch.models import JobInstance
    from batch.statuses import ENDED_JOB_STATUSES

    return wait_until(
        lambda: (instance := JobInstance.objects.get(id=job_id)).status in ENDED_JOB_STATUSES and instance,
        timeout,
        while_waiting=run_maintenance_pass,
        message=lambda: f"{JobInstance.objects.get(id=job_id)}",
    )


def wait_until_ready(worker: Process) -> None:
    worker.wait_for_output(" ready.", timeout=STARTUP_TIMEOUT)


def gunicorn(port: int, env: dict[str, str], *options: str, name: str = "web") -> Process:
    """`gunicorn heavylift.wsgi` on 127.0.0.1:`port` with these options; wait with `wait_until_serving`."""
    argv = [sys.executable, "-m", "gunicorn", "heavylift.wsgi", "--bind", f"127.0.0.1:{port}", *options]
    return Process(argv, env=env, name=name)


def wait_until_serving(web: Process, timeout: float = 60) -> None:
    web.wait_for_output("Booting worker", timeout=timeout)


def celery_beat(env: dict[str, str], name: str = "beat") -> Process:
    """`celery beat` with the project's scheduler (CELERY_BEAT_SCHEDULER); wait with `wait_until_beating`."""
    return Process(
        [sys.executable, "-m", "celery", "-A", "heavylift", "beat", "--loglevel", "INFO", "--pidfile="],
        env=env,
        name=name,
    )


def wait_until_beating(beat: Process) -> None:
    beat.wait_for_output("beat: Starting...", timeout=STARTUP_TIMEOUT)


def scheduler_worker(env: dict[str, str], name: str = "scheduler") -> Process:
    """`manage.py run_scheduler_worker`, as the Procfile starts it; wait with `wait_until_ready`."""
    return Process(
        [sys.executable, "manage.py", "run_scheduler_worker", "--", "--without-mingle", "--without-gossip"],
        env=env,
        name=name,
    )


def scheduler_hostname(node: str, worker: Process) -> str:
    """The Celery node name run_scheduler_worker gives the worker (the command execs, keeping its pid)."""
    return f"scheduler-{node}-{worker.popen.pid}@{socket.gethostname()}"


def inspect_worker(hostname: str, method: str, timeout: float = 60) -> Any:
    """Ask one worker over the broker (`stats`, `active_queues`, ...) until it answers.

    A worker busy or just started may miss one broadcast round; asking again until the ceiling is what
    turns "no answer yet" into a retry instead of a KeyError.
    """
    from heavylift.celery import app

    def answer() -> Any:
        replies = getattr(app.control.inspect(destination=[hostname], timeout=2), method)() or {}
        return replies.get(hostname) if hostname in replies else None

    return wait_until(
        lambda: (reply,) if (reply := answer()) is not None else None,
        timeout,
        message=f"{hostname} did not answer {method}",
    )[0]


def start_all(processes: list[Process], ready: Callable[[Process], None]) -> None:
    """Wait for processes that were started together (they come up in parallel, not one after another)."""
    for process in processes:
        ready(process)


IN_FLIGHT_SETTLE_SECONDS = 1  # far above the time PostgreSQL takes to apply a statement already sent to it


def kill_while_it_holds(worker: Process, holding: QuerySet, timeout: float) -> Model:
    """SIGKILL the worker (its whole process group) while it holds a row of `holding` (IN_PROGRESS chunks of its).

    Seeing the chunk held and killing are two steps, and the chunk may finish in between; so the worker is
    frozen first (SIGSTOP) and killed only if, frozen, it still holds the chunk a moment later. That moment
    is the one fixed wait here: it waits for the absence of a completion the frozen worker may already have
    sent, which nothing can be polled for. Otherwise the worker thaws and the hunt goes on.
    """

    def frozen_holding() -> Model | None:
        if not holding.exists():
            return None
        worker.signal_group(signal.SIGSTOP)
        time.sleep(IN_FLIGHT_SETTLE_SECONDS)
        held = holding.first()
        if held is not None:
            worker.signal_group(signal.SIGKILL)
        worker.signal_group(signal.SIGCONT)
        return held

    return wait_until(frozen_holding, timeout, message=lambda: f"{worker.name} held no such chunk:\n{worker.tail()}")


@contextmanager
def locked_by_another_transaction(statement: str) -> Iterator[None]:
    """Run `statement` (one that takes a lock) in a transaction of a connection of its own, held for the block.

    A worker whose chunk needs that lock waits for it while it holds its chunk, so `kill_while_it_holds`
    catches the chunk in flight however fast chunks are; hunting for a fast chunk by freezing and polling
    missed it on a busy machine. The lock goes when the block ends (rolled back).
    """
    with psycopg.connect(subprocess_database_url()) as holder:
        holder.execute(statement)
        yield
        holder.rollback()


def wait_for_a_backend_waiting_on_a_lock(timeout: float = 120) -> None:
    """Return once a session of the test database waits for a lock: the second of two racing writers is
    queued behind the first, so the test may now let the first one go."""
    deadline = time.monotonic() + timeout
    with connection.cursor() as cursor:
        while time.monotonic() < deadline:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
            )
            if cursor.fetchone()[0]:
                return
            time.sleep(0.02)
    raise AssertionError(f"no backend waited on a lock within {timeout} s")
