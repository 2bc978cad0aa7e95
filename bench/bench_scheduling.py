"""How late a clustered job starts after its tick (p50/p99), with two beats and three scheduler workers.

Three phases, in one run:
  idle        — nothing else runs;
  busy        — system `$export`s keep three standard batch workers (`celery -A heavylift worker`,
                BATCH_MAX_THREADS=2 each) busy on their node's batch queue, as the dedicated scheduler
                queue intends: two exports at a time (one per user), each started through the bulk-export
                service layer as soon as the previous one of its user has finished;
  baseline    — the same load, but beat routes scheduled work onto the batch node's queue, as if
                scheduled jobs shared the batch pool.
The store holds `generate_fhir --patients 500 --seed 1` in a database of its own
(`<DATABASE_URL's name>_bench_scheduling`), created at start and dropped at the end.
Start delay = JobRun.started_at (Postgres clock) − tick; both clocks are this machine's.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from bench.support import bench_database, percentile_ms, scratch_directory
from tests.processes import (
    Process,
    celery_beat,
    celery_worker,
    scheduler_worker,
    start_all,
    stop_all,
    wait_until_beating,
    wait_until_ready,
)

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "heavylift.settings")

PHASE_SECONDS = 40  # two 1 s jobs: ~80 start delays per phase
SETTLE = timedelta(seconds=3)  # ticks this close to a phase change are left out
SCHEDULER_THREADS = "2"  # per scheduler worker: 3 workers × 2 on a 2-core machine
BUSY_WORKERS, BUSY_CONCURRENCY = 3, 2  # batch workers × BATCH_MAX_THREADS, as the benchmark asks
PATIENTS = 500  # ~53,000 resources: an export of a few seconds, started again and again through each phase
EXPORT_USERS = 2  # one running export per user (identical requests of one user are one export): overlapping
# exports keep the workers busy across one export's gated step changes
TOP_UP_SECONDS = 0.5  # how often finished exports are replaced


def phase(name: str, seconds: int, meanwhile: Callable[[], None] = lambda: None) -> tuple[str, datetime, datetime]:
    """`meanwhile` is called every TOP_UP_SECONDS until the phase ends."""
    print(f"  {name}: {seconds} s ...", flush=True)
    started = datetime.now(timezone.utc)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        meanwhile()
        time.sleep(min(TOP_UP_SECONDS, max(0.0, deadline - time.monotonic())))
    return name, started, datetime.now(timezone.utc)


class Exports:
    """Back-to-back system exports, one running per user, through the bulk-export service layer."""

    def __init__(self) -> None:
        from django.contrib.auth import get_user_model

        self.users = [
            get_user_model().objects.create(username=f"bench-scheduling-{index}") for index in range(EXPORT_USERS)
        ]
        self.running: dict[int, uuid.UUID] = {}
        self.completed = 0

    def top_up(self) -> None:
        """Replaces every finished export by a new one (a failed export raises ExportFailed)."""
        from fhirjobs.bulkexport.parameters import Level, parse_export_request
        from fhirjobs.bulkexport.services import delete_export, export_status, kick_off
        from fhirjobs.common.status import State

        for user in self.users:
            export_id = self.running.get(user.pk)
            if export_id is not None:
                if export_status(user, export_id).state is State.RUNNING:
                    continue
                delete_export(user, export_id)  # its files: the disk stays bounded however long the run
                self.completed += 1
            started = kick_off(
                user,
                parse_export_request(Level.SYSTEM, []),
                base_url="http://bench/fhir",
                request_url="http://bench/fhir/$export",
            )
            self.running[user.pk] = started.export.id


def report(name: str, started: datetime, stopped: datetime) -> str:
    from bench.periodic_for_bench import BENCH_JOBS
    from scheduling.models import JobRun, RunOutcome

    runs = JobRun.objects.filter(job_name__in=BENCH_JOBS, tick__gt=started + SETTLE, tick__lt=stopped - SETTLE)
    ticks = int((stopped - started - 2 * SETTLE).total_seconds()) * len(BENCH_JOBS)
    delays = sorted(run.start_delay_seconds for run in runs if run.outcome == RunOutcome.SUCCEEDED)
    missed = sum(run.outcome == RunOutcome.MISSED for run in runs)
    if len(delays) < 2:
        return f"{name:<10} {'-':>8} {'-':>8} {'-':>8} {len(delays):>5}/{ticks:<5} {missed:>6}"
    p50, p99 = percentile_ms(delays, 50), percentile_ms(delays, 99)
    return f"{name:<10} {p50:>8.1f} {p99:>8.1f} {delays[-1] * 1000:>8.1f} {len(delays):>5}/{ticks:<5} {missed:>6}"


def main() -> None:
    batch_node = f"bench-batch-{uuid.uuid4().hex[:6]}"
    # The subprocesses inherit this (and the benchmark database, which holds the export files): this process
    # kicks exports off on the batch workers' node, so its announcements reach their queue.
    os.environ.update({"NODE_ID": batch_node})
    with scratch_directory("scheduling"):
        with bench_database("bench_scheduling") as (_, bench_name):
            from django.core.management import call_command

            from batch.queues import work_notification_queue
            from heavylift.celery import app

            scheduled_queue, batch_queue = f"bench-scheduled-{uuid.uuid4().hex[:6]}", work_notification_queue()
            base = {"SCHEDULING_JOB_MODULES": "bench.periodic_for_bench", "SCHEDULER_THREAD_COUNT": SCHEDULER_THREADS}
            processes: list[Process] = []
            phases = []
            try:
                print(f"database {bench_name}: generate_fhir --patients {PATIENTS} --seed 1 ...", flush=True)
                call_command("generate_fhir", patients=PATIENTS, seed=1, no_progress=True)
                print(f"starting 3 scheduler workers (x{SCHEDULER_THREADS}) and 2 beats ...", flush=True)

                def start(new: list[Process], ready: Callable[[Process], None]) -> list[Process]:
                    processes.extend(new)  # stopped at the end whatever happens
                    start_all(new, ready)
                    return new

                def beats_routing_to(queue: str) -> list[Process]:
                    """Two beats whose scheduled work goes to `queue`."""
                    return start(
                        [
                            celery_beat({**base, "NODE_ID": f"bench-{index}", "SCHEDULER_QUEUE": queue})
                            for index in range(2)
                        ],
                        wait_until_beating,
                    )

                start(
                    [
                        scheduler_worker({**base, "NODE_ID": f"bench-{index}", "SCHEDULER_QUEUE": scheduled_queue})
                        for index in range(3)
                    ],
                    wait_until_ready,
                )
                beats = beats_routing_to(scheduled_queue)
                phases.append(phase("idle", PHASE_SECONDS))

                print(
                    f"starting {BUSY_WORKERS} batch workers (BATCH_MAX_THREADS={BUSY_CONCURRENCY}) on {batch_queue}, "
                    f"exports back to back ...",
                    flush=True,
                )
                start(
                    [
                        celery_worker(
                            {**base, "BATCH_MAX_THREADS": str(BUSY_CONCURRENCY)},
                            queues=[batch_queue],
                            concurrency=None,
                            name=f"{batch_node}-{index}",
                            wait=False,
                        )
                        for index in range(BUSY_WORKERS)
                    ],
                    wait_until_ready,
                )
                exports = Exports()
                exports.top_up()
                phases.append(phase("busy", PHASE_SECONDS, exports.top_up))

                print("baseline: beats now route scheduled work onto the batch queue ...", flush=True)
                stop_all(beats)
                beats_routing_to(batch_queue)
                phases.append(phase("baseline", PHASE_SECONDS, exports.top_up))

                print(
                    f"\nstart delay of a clustered job after its tick (ms), 2 beats, 3 scheduler workers, "
                    f"{os.cpu_count()} CPUs; {exports.completed} exports completed meanwhile"
                )
                print(f"{'phase':<10} {'p50':>8} {'p99':>8} {'max':>8} {'ran/ticks':>11} {'missed':>6}")
                for name, started, stopped in phases:
                    print(report(name, started, stopped))
                print("ran/ticks: occurrences started during the phase; missed: taken after the next tick had come.")
            finally:
                stop_all(processes)
                with app.connection_for_write() as broker:
                    for queue in (scheduled_queue, batch_queue):
                        broker.default_channel.queue_purge(queue)


if __name__ == "__main__":
    main()
