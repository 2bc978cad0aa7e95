"""How late a clustered job starts after its tick (p50/p99), with two beats and three scheduler workers.

Three phases, in one run:
  idle        — nothing else runs;
  busy        — three batch workers (2 processes each) burn CPU on their own queue, as the dedicated
                scheduler queue intends;
  baseline    — the same load, but beat routes scheduled work onto the busy workers' queue, as if
                scheduled jobs shared the batch pool.
The batch engine is not on this branch, so the load is CPU-bound Celery tasks (`bench.burn_cpu`), not
export chunks. Start delay = JobRun.started_at (Postgres clock) − tick; both clocks are this machine's.
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "jobsite.settings")

PROJECT_DIR = Path(__file__).resolve().parent.parent
PHASE_SECONDS = 40  # two 1 s jobs: ~80 start delays per phase
SETTLE = timedelta(seconds=3)  # ticks this close to a phase change are left out
SCHEDULER_THREADS = "2"  # per scheduler worker: 3 workers × 2 on a 2-core machine
BUSY_WORKERS, BUSY_CONCURRENCY = 3, 2
BURN_SECONDS = 0.5  # CPU per busy task


class Stack:
    """The subprocesses of the benchmark, stopped (by pid) whatever happens."""

    def __init__(self) -> None:
        self.processes: list[tuple[subprocess.Popen, Path]] = []

    def start(self, argv: list[str], env: dict[str, str], ready: str) -> subprocess.Popen:
        log = Path(tempfile.mkstemp(prefix="bench-scheduling-", suffix=".log")[1])
        with log.open("wb") as out:
            process = subprocess.Popen(argv, cwd=PROJECT_DIR, env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
                                       stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.processes.append((process, log))
        deadline = time.monotonic() + 90
        while ready not in log.read_text(errors="replace"):
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{' '.join(argv[2:6])} did not start:\n{log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.2)
        return process

    def stop(self, process: subprocess.Popen) -> None:
        if process.poll() is None:
            os.killpg(process.pid, 15)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, 9)
                process.wait()

    def stop_all(self) -> None:
        for process, log in reversed(self.processes):
            self.stop(process)
            log.unlink(missing_ok=True)


def beat(stack: Stack, env: dict[str, str]) -> subprocess.Popen:
    return stack.start([sys.executable, "-m", "celery", "-A", "jobsite", "beat", "--loglevel", "INFO", "--pidfile="],
                       env, "beat: Starting...")


def phase(name: str, seconds: int) -> tuple[str, datetime, datetime]:
    print(f"  {name}: {seconds} s ...", flush=True)
    started = datetime.now(timezone.utc)
    time.sleep(seconds)
    return name, started, datetime.now(timezone.utc)


def keep_busy(queue: str, seconds: int) -> None:
    from jobsite.celery import app

    tasks = int(BUSY_WORKERS * BUSY_CONCURRENCY * seconds / BURN_SECONDS * 1.5)  # more than they can finish
    with app.producer_or_acquire() as producer:
        for _ in range(tasks):
            app.send_task("bench.burn_cpu", args=[BURN_SECONDS], queue=queue, producer=producer)


def report(name: str, started: datetime, stopped: datetime) -> str:
    from scheduling.models import JobRun, RunOutcome
    from bench.scheduling_jobs import BENCH_JOBS

    runs = JobRun.objects.filter(job_name__in=BENCH_JOBS, tick__gt=started + SETTLE, tick__lt=stopped - SETTLE)
    ticks = int((stopped - started - 2 * SETTLE).total_seconds()) * len(BENCH_JOBS)
    delays = sorted(run.start_delay_seconds * 1000 for run in runs if run.outcome == RunOutcome.SUCCEEDED)
    missed = sum(run.outcome == RunOutcome.MISSED for run in runs)
    if len(delays) < 2:
        return f"{name:<10} {'-':>8} {'-':>8} {'-':>8} {len(delays):>5}/{ticks:<5} {missed:>6}"
    p50 = statistics.median(delays)
    p99 = statistics.quantiles(delays, n=100, method="inclusive")[98]
    return f"{name:<10} {p50:>8.1f} {p99:>8.1f} {delays[-1]:>8.1f} {len(delays):>5}/{ticks:<5} {missed:>6}"


def main() -> None:
    import django

    django.setup()
    from django.db import connection

    from bench.scheduling_jobs import BENCH_JOBS
    from jobsite.celery import app
    from scheduling.models import JobRun

    scheduled_queue, busy_queue = f"bench-scheduled-{uuid.uuid4().hex[:6]}", f"bench-busy-{uuid.uuid4().hex[:6]}"
    base = {"SCHEDULING_JOB_MODULES": "bench.scheduling_jobs", "SCHEDULER_THREAD_COUNT": SCHEDULER_THREADS}
    stack = Stack()
    phases = []
    try:
        print(f"starting 3 scheduler workers (x{SCHEDULER_THREADS}) and 2 beats ...", flush=True)
        for index in range(3):
            stack.start([sys.executable, "manage.py", "run_scheduler_worker", "--", "--without-mingle",
                         "--without-gossip"],
                        {**base, "NODE_ID": f"bench-{index}", "SCHEDULER_QUEUE": scheduled_queue}, " ready.")
        beats = [beat(stack, {**base, "NODE_ID": f"bench-{index}", "SCHEDULER_QUEUE": scheduled_queue})
                 for index in range(2)]
        phases.append(phase("idle", PHASE_SECONDS))

        print(f"starting {BUSY_WORKERS} batch workers (x{BUSY_CONCURRENCY}) burning CPU ...", flush=True)
        for index in range(BUSY_WORKERS):
            stack.start([sys.executable, "-m", "celery", "-A", "jobsite", "worker", "-Q", busy_queue,
                         "--concurrency", str(BUSY_CONCURRENCY), "-I", "bench.tasks", "--loglevel", "INFO", "--without-mingle",
                         "--without-gossip", "--hostname", f"bench-busy-{index}-{os.getpid()}@%h"],
                        {**base, "NODE_ID": f"bench-{index}"}, " ready.")
        keep_busy(busy_queue, PHASE_SECONDS * 2 + 30)
        phases.append(phase("busy", PHASE_SECONDS))

        print("baseline: beats now route scheduled work onto the busy queue ...", flush=True)
        for old in beats:
            stack.stop(old)
        for index in range(2):
            beat(stack, {**base, "NODE_ID": f"bench-{index}", "SCHEDULER_QUEUE": busy_queue})
        phases.append(phase("baseline", PHASE_SECONDS))

        print(f"\nstart delay of a clustered job after its tick (ms), 2 beats, 3 scheduler workers, "
              f"{os.cpu_count()} CPUs")
        print(f"{'phase':<10} {'p50':>8} {'p99':>8} {'max':>8} {'ran/ticks':>11} {'missed':>6}")
        for name, started, stopped in phases:
            print(report(name, started, stopped))
        print("ran/ticks: occurrences started during the phase; missed: taken after the next tick had come.")
    finally:
        stack.stop_all()
        with app.connection_for_write() as broker:
            for queue in (scheduled_queue, busy_queue):
                broker.default_channel.queue_purge(queue)
        JobRun.objects.filter(job_name__in=BENCH_JOBS).delete()
        from django_celery_beat.models import PeriodicTask

        PeriodicTask.objects.filter(name__in=BENCH_JOBS).delete()
        connection.close()


if __name__ == "__main__":
    main()
