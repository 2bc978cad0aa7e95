"""Throughput of one job across machines: DIAGNOSTIC_NOOP with IO-like chunks on 1, 2 and 3 worker hosts of
one node, against plain Celery tasks doing the same on the same workers, in the same run.

The hosts are the test suite's simulated machines (tests/cluster/hosts.py: network namespaces, each its own
hostname and disk; PostgreSQL and Redis on a database host), so it needs root. Every worker host runs the
Procfile's `worker` (BATCH_MAX_THREADS processes) with `NODE_ID=main`: one logical node, one queue. A round
with n hosts adds the n-th host's worker, warms up, then times
- the engine: a DIAGNOSTIC_NOOP job of `--chunks` chunks sleeping `--sleep-ms` each (a chunk waiting on IO,
  as one calling another service), from `start_job` to COMPLETED (the first step emitting and announcing
  them included), and checks its chunks ran on all n hosts;
- plain Celery: as many tasks sleeping as long, published to the `default` queue every worker consumes,
  until the queue is empty and every message acknowledged.
The scaling ratio is the rate on n hosts over n times the rate on one (1.0 = linear; goal >= 0.8 at 3).
The CPU that PostgreSQL, Redis and the workers spent per chunk during the engine's run is printed too: the
database's share is what sets the cluster's ceiling (docs/cluster.md).

    sudo python -m bench.bench_cluster [--chunks 3000] [--sleep-ms 20] [--rounds 1] [--json]

`--json` prints the figures as one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from tests.cluster.hosts import Cluster, Host, missing_tools, wait_until_ready
from tests.processes import process_logs

NODE = "main"
HOSTS = 3
WARM_UP = 100  # chunks and tasks run on each new host count before timing: imports, connections, caches
POLL_SECONDS = 0.05
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(host: Host, command: str | None = None) -> float:
    """CPU time of the processes on `host` (of `command` only, if given), the children they reaped included."""
    total = 0
    for pid in host.pids():
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        name, fields = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :].split()
        if command is None or name.startswith(command):
            total += sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
    return total / CLOCK_TICKS


def plain_celery(tasks: int, sleep_ms: int) -> float:
    import redis
    from django.conf import settings

    from bench.bench_batch import unacknowledged
    from bench.tasks import publish_sleeps

    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    started = time.perf_counter()
    publish_sleeps("default", tasks, sleep_ms)
    while broker.llen("default") or unacknowledged(broker, "default"):
        time.sleep(POLL_SECONDS)
    return time.perf_counter() - started


def hosts_that_ran(job_id: str, hosts: list[Host]) -> int:
    from batch.models import WorkChunk

    workers = set(WorkChunk.objects.filter(instance_id=job_id).values_list("worker", flat=True).distinct())
    return sum(any(f"@worker-{host.name}-" in worker for worker in workers) for host in hosts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=3000)
    parser.add_argument("--sleep-ms", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=1, help="timed runs of each per host count; the best is kept")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object as the last line")
    args = parser.parse_args()
    if os.geteuid() != 0 or missing_tools():  # skipped, not failed: `make bench` runs every benchmark
        print(
            "bench_cluster skipped: it needs root and ip, nsenter, unshare to build simulated hosts "
            "(tests/cluster/hosts.py)",
            file=sys.stderr,
        )
        return

    process_logs.directory = Path(tempfile.mkdtemp(prefix="bench-cluster-logs-"))
    results = []
    with Cluster.create() as cluster:
        cluster.start_database()
        os.environ.update({**cluster.settings, "DJANGO_SETTINGS_MODULE": "heavylift.settings"})
        import django

        django.setup()
        from django.conf import settings

        from bench.bench_batch import engine

        workers = [cluster.add_host(f"w{index}", NODE_ID=NODE) for index in range(1, HOSTS + 1)]
        db = cluster.database_host
        for count in range(1, HOSTS + 1):
            wait_until_ready([workers[count - 1].start("worker", "--include", "bench.tasks")])
            engine(NODE, WARM_UP, args.sleep_ms)
            plain_celery(WARM_UP, args.sleep_ms)
            plain_runs, engine_runs = [], []
            for _ in range(args.rounds):
                plain_runs.append(plain_celery(args.chunks, args.sleep_ms))
                cpu_before = (
                    cpu_seconds(db, "postgres"),
                    cpu_seconds(db, "redis"),
                    sum(cpu_seconds(host) for host in workers[:count]),
                )
                seconds, job_id = engine(NODE, args.chunks, args.sleep_ms)
                cpu_after = (
                    cpu_seconds(db, "postgres"),
                    cpu_seconds(db, "redis"),
                    sum(cpu_seconds(host) for host in workers[:count]),
                )
                engine_runs.append(
                    (
                        seconds,
                        [
                            (after - before) * 1000 / args.chunks
                            for before, after in zip(cpu_before, cpu_after, strict=True)
                        ],
                    )
                )
                spread = hosts_that_ran(job_id, workers[:count])
                if spread != count:
                    raise SystemExit(f"the job ran on {spread} of {count} hosts")
            seconds, cpu_ms = min(engine_runs)
            results.append(
                {
                    "hosts": count,
                    "engine_per_s": round(args.chunks / seconds, 1),
                    "celery_per_s": round(args.chunks / min(plain_runs), 1),
                    "postgres_cpu_ms_per_chunk": round(cpu_ms[0], 2),
                    "redis_cpu_ms_per_chunk": round(cpu_ms[1], 2),
                    "worker_cpu_ms_per_chunk": round(cpu_ms[2], 2),
                }
            )
            latest = results[-1]
            print(
                f"{count} host(s): engine {latest['engine_per_s']:.0f} chunks/s, plain Celery "
                f"{latest['celery_per_s']:.0f} tasks/s; CPU per chunk: PostgreSQL "
                f"{cpu_ms[0]:.2f} ms, Redis {cpu_ms[1]:.2f} ms, workers {cpu_ms[2]:.2f} ms",
                flush=True,
            )
        processes = settings.BATCH_MAX_THREADS

    for row in results:
        row["engine_scaling"] = round(row["engine_per_s"] / (row["hosts"] * results[0]["engine_per_s"]), 3)
        row["celery_scaling"] = round(row["celery_per_s"] / (row["hosts"] * results[0]["celery_per_s"]), 3)
    print(f"{args.chunks} chunks of {args.sleep_ms} ms, {processes} worker processes per host, one node")
    print("hosts  engine chunks/s  x linear   plain Celery tasks/s  x linear   engine/Celery")
    for row in results:
        print(
            f"{row['hosts']:5d}  {row['engine_per_s']:15.0f}  {row['engine_scaling']:8.2f}   "
            f"{row['celery_per_s']:20.0f}  {row['celery_scaling']:8.2f}   "
            f"{row['engine_per_s'] / row['celery_per_s']:11.0%}"
        )
    print(f"process logs: {process_logs.directory}")
    if args.json:
        print(
            json.dumps(
                {
                    "chunks": args.chunks,
                    "sleep_ms": args.sleep_ms,
                    "processes_per_host": processes,
                    "rounds": args.rounds,
                    "by_hosts": results,
                    "scaling_at_3": results[-1]["engine_scaling"],
                }
            )
        )


if __name__ == "__main__":
    main()
