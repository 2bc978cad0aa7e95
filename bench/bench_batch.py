"""Batch engine throughput against plain Celery, on one worker, through the same Redis, in the same run.

Engine: DIAGNOSTIC_NOOP with N chunks and sleep_ms=0, timed from `start_job` to COMPLETED (so the first
step emitting and announcing the N chunks is included). Baseline: N plain Celery no-op tasks published
in pipelined batches, timed until the queue is empty and every message of it is acknowledged (only this
run's queue counts: other processes' unacknowledged messages in the same Redis are none of its business).

    python -m bench.bench_batch [--chunks 10000] [--concurrency N] [--json]

`--json` prints the figures as one JSON object as the last line: `engine_per_s`, `celery_per_s`, `ratio`.
It runs in a database of its own (`<DATABASE_URL's name>_bench_batch`), created at start and dropped at the
end: chunk tables left bloated by earlier runs (or autovacuum cleaning them up mid-run) would be measured too.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid

import redis

from bench.support import bench_database, scratch_directory
from bench.tasks import publish_noops, wait_until_consumed
from tests.processes import Process

os.environ["BATCH_DIAGNOSTIC_JOBS"] = "true"  # the benchmark runs DIAGNOSTIC_NOOP; its workers inherit this

POLL_SECONDS = 0.05  # completion is seen within this; small against the runs timed
WARM_UP = 200  # tasks and chunks run before timing: worker imports, connections, caches


def start_worker(node: str, queue: str, concurrency: int) -> Process:
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "heavylift",
        "worker",
        "--loglevel",
        "WARNING",
        "--concurrency",
        str(concurrency),
        "--queues",
        queue,
        "--include",
        "bench.tasks",
        "--hostname",
        f"bench-{node}@%h",
        "--without-mingle",
        "--without-gossip",
    ]
    worker = Process(argv, env={"NODE_ID": node}, name="worker")
    wait_until_consumed(queue, timeout=120)
    return worker


def plain_celery(queue: str, count: int) -> float:
    from django.conf import settings

    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    started = time.perf_counter()
    publish_noops(queue, count)
    while broker.llen(queue) or unacknowledged(broker, queue):
        time.sleep(POLL_SECONDS)
    return time.perf_counter() - started


def unacknowledged(broker: redis.Redis, queue: str) -> int:
    """Messages of `queue` delivered but not yet acknowledged: kombu keeps each in the `unacked` hash as
    `[message, exchange, routing_key]` (a few per worker process, so reading them all is cheap)."""
    return sum(1 for raw in broker.hvals("unacked") if json.loads(raw)[2] == queue)


def engine(node: str, chunks: int, sleep_ms: int = 0) -> tuple[float, str]:
    """Seconds from starting a DIAGNOSTIC_NOOP job of `chunks` chunks on `node` to its end, and the job's id
    (bench_cluster times its jobs the same way); the benchmark stops unless the job COMPLETED."""
    from batch.control import get_job, start_job, unfinished_job_ids

    started = time.perf_counter()
    instance = start_job("DIAGNOSTIC_NOOP", {"chunks": chunks, "sleep_ms": sleep_ms}, started_by="bench", node_id=node)
    while unfinished_job_ids().filter(id=instance.id).exists():  # one index lookup: no load on the run timed
        time.sleep(POLL_SECONDS)
    elapsed = time.perf_counter() - started
    status = get_job(instance.id).status
    if status != "COMPLETED":
        raise SystemExit(f"the benchmark job ended {status}")
    return elapsed, str(instance.id)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=None, help="pool processes (default: BATCH_MAX_THREADS)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="alternate the two this many times and keep the best of each (a shared machine is noisy)",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object as the last line")
    args = parser.parse_args()

    with scratch_directory("batch"), bench_database("bench_batch"):
        from django.conf import settings

        from batch.queues import work_notification_queue

        args.concurrency = args.concurrency or settings.BATCH_MAX_THREADS
        node = f"bench-{uuid.uuid4().hex[:8]}"
        queue = work_notification_queue(node, settings.MODULE_ID)
        worker = start_worker(node, queue, args.concurrency)
        plain_runs, engine_runs = [], []
        try:
            plain_celery(queue, WARM_UP)
            engine(node, WARM_UP)
            for round_number in range(1, args.rounds + 1):
                plain_runs.append(plain_celery(queue, args.chunks))
                engine_runs.append(engine(node, args.chunks)[0])
                print(
                    f"round {round_number}: plain Celery {args.chunks / plain_runs[-1]:.0f} tasks/s, "
                    f"engine {args.chunks / engine_runs[-1]:.0f} chunks/s",
                    flush=True,
                )
        finally:
            worker.stop(timeout=30)

    plain_seconds, engine_seconds = min(plain_runs), min(engine_runs)
    plain_rate, engine_rate = args.chunks / plain_seconds, args.chunks / engine_seconds
    print(f"one worker, concurrency {args.concurrency}, {args.chunks} messages each, best of {args.rounds}")
    print(f"plain Celery no-op tasks      {plain_seconds:7.2f} s  {plain_rate:8.0f} tasks/s")
    print(f"engine DIAGNOSTIC_NOOP chunks {engine_seconds:7.2f} s  {engine_rate:8.0f} chunks/s")
    print(f"engine / plain Celery         {engine_rate / plain_rate:7.0%}")
    if args.json:
        print(
            json.dumps(
                {
                    "engine_per_s": round(engine_rate, 1),
                    "celery_per_s": round(plain_rate, 1),
                    "ratio": round(engine_rate / plain_rate, 3),
                    "chunks": args.chunks,
                    "concurrency": args.concurrency,
                    "rounds": args.rounds,
                }
            )
        )


if __name__ == "__main__":
    main()
