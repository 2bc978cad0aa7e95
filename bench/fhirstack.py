"""What the FHIR job benchmarks (export, import, reindex) share.

Each of them runs the Procfile's `web` (gunicorn) and `worker` (celery) on a node of its own, reads patients
over HTTP with an API token while its job runs (the live API's latency is part of every figure), and samples
the worker processes' memory. Those parts live here so that the three measure the same way.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import shutil
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil

from bench.support import bench_database, percentile_ms
from tests.processes import Process, free_port, process_logs, stop_all

IDLE_READS = 1500  # reads timed with the system idle: a p99 of 500 (the 5th slowest) moved by 1.4x between runs
SPIN_READS = 3000  # reads timed beside a spinning process (about 15 s)
WARMUP_READS = 100  # untimed reads first: each gunicorn thread's first requests are slower (lazy imports, caches)
STARTUP_SECONDS = 120  # a cold gunicorn or celery start on a loaded 2-core machine


def job_bench_arguments(
    doc: str, *, resources: int, resources_help: str = "store size", reuse: bool = True
) -> argparse.ArgumentParser:
    """The options every FHIR job benchmark takes (`--resources`, `--keep`, `--reuse` where a kept store can be
    measured again, `--json`); a benchmark adds its own before parsing."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--resources", type=int, default=resources, help=resources_help)
    parser.add_argument("--keep", action="store_true", help="keep the benchmark database")
    if reuse:
        parser.add_argument("--reuse", action="store_true", help="start from a kept benchmark database")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object, the last line")
    return parser


@dataclass(frozen=True)
class JobBench:
    """Where one FHIR job benchmark runs: its database, a scratch directory, its node, its processes' environment."""

    database_url: str
    database_name: str
    workdir: Path
    node: str
    environment: dict[str, str]


@contextmanager
def job_bench(name: str, options: argparse.Namespace) -> Iterator[JobBench]:
    """A database `<DATABASE_URL's>_bench_<name>` (kept or reused as the options say), a scratch directory
    removed afterwards, and a node of its own: set in this process too (a job it starts goes to the bench
    worker's queue) and in the environment of the stack's processes, which schedule no jobs and log warnings."""
    node = f"bench-{name}-{uuid.uuid4().hex[:8]}"
    os.environ["NODE_ID"] = node
    with bench_database(f"bench_{name}", reuse=getattr(options, "reuse", False), keep=options.keep) as (url, database):
        workdir = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
        try:
            yield JobBench(
                url, database, workdir, node, {**os.environ, "JOB_SCHEDULING": "false", "LOG_LEVEL": "WARNING"}
            )
        finally:
            shutil.rmtree(workdir, ignore_errors=True)


def print_setup(bench: JobBench, detail: str) -> None:
    """The first line of every FHIR job benchmark: what it runs on."""
    from django.conf import settings

    print(
        f"database {bench.database_name}; {os.cpu_count()} CPUs; worker processes {settings.BATCH_MAX_THREADS}; "
        f"{detail}",
        flush=True,
    )


def print_json(options: argparse.Namespace, figures: dict) -> None:
    """The figures as one JSON object on the last line, when `--json` asked for it."""
    if options.json:
        print(json.dumps(figures), flush=True)


class FhirClient:
    """A FHIR client over plain HTTP with an API token; any answer but 200/202 ends the benchmark."""

    def __init__(self, base: str, token: str):
        self.base = base
        self.headers = {"Authorization": f"Bearer {token}", "Accept": "application/fhir+json"}

    def wait_until_up(self, timeout: float = STARTUP_SECONDS) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.request("GET", f"{self.base}/metadata")
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def read_patient(self, logical_id: str) -> float:
        """Seconds one `GET Patient/[id]` took."""
        started = time.perf_counter()
        self.request("GET", f"{self.base}/Patient/{logical_id}")
        return time.perf_counter() - started

    def kick_off(self, operation: str, parameters: dict | None = None) -> str:
        """Start an async operation (`$export` by GET, others by POSTing a Parameters body); its status URL."""
        headers = {"Prefer": "respond-async"}
        if parameters is None:
            response = self.request("GET", f"{self.base}/{operation}", headers)
        else:
            response = self.request(
                "POST",
                f"{self.base}/{operation}",
                {**headers, "Content-Type": "application/fhir+json"},
                json.dumps(parameters).encode(),
            )
        return response.headers["Content-Location"]

    def poll(self, status_url: str) -> dict | None:
        """The final answer of an async operation, or None while it runs."""
        response = self.request("GET", status_url)
        return json.loads(response.read()) if response.status == 200 else None

    def request(self, method: str, url: str, headers: dict | None = None, data: bytes | None = None):
        request = urllib.request.Request(url, method=method, data=data, headers={**self.headers, **(headers or {})})
        response = urllib.request.urlopen(request, timeout=60)
        if response.status not in (200, 202):
            raise SystemExit(f"{method} {url}: {response.status} {response.read()[:500]!r}")
        return response


@dataclass
class FhirStack:
    client: FhirClient
    web: Process
    worker: Process
    patients: list[str]  # ids the latency probe reads


@contextmanager
def fhir_stack(
    node: str, environment: dict[str, str], workdir: Path, *, username: str, staff: bool = False
) -> Iterator[FhirStack]:
    """The Procfile's web and worker processes on `node`, up and ready; stopped on exit. They are started with the
    acceptance tests' harness (`tests.processes`) and log into `workdir`.

    The worker is the Procfile's command line: it declares its node's batch queue itself (`celeryd_init`).
    It is waited for until it consumes that queue, because a message sent to a queue no worker declared
    yet is dropped by Redis."""
    port = free_port()
    process_logs.directory = workdir
    started: list[Process] = []
    try:
        web = Process(
            [_venv("gunicorn"), "heavylift.wsgi", "--bind", f"127.0.0.1:{port}", "--workers", "2", "--threads", "4"],
            environment,
            name="web",
        )
        started.append(web)
        hostname = f"{node}-%h-%i"
        worker = Process(
            [_venv("celery"), "-A", "heavylift", "worker", "-E", "--loglevel", "WARNING", "--hostname", hostname],
            environment,
            name="worker",
        )
        started.append(worker)
        client = FhirClient(f"http://127.0.0.1:{port}/fhir", api_token(username, staff=staff))
        client.wait_until_up()
        _wait_for_queue_consumer(node, worker)
        yield FhirStack(client, web, worker, _patient_ids())
    finally:
        stop_all(started, timeout=30)


def idle_latencies(client: FhirClient, patients: list[str]) -> list[float]:
    """Reads timed with nothing else running: the baseline of every 'during' figure (taken by the same probe),
    after WARMUP_READS untimed ones (without them the first baseline was 1.2-4x the one after the job)."""
    for _ in range(WARMUP_READS):
        client.read_patient(random.choice(patients))
    return _counted_reads(client, patients, IDLE_READS, "idle")


def spinning_latencies(client: FhirClient, patients: list[str]) -> list[float]:
    """Reads timed while one process does nothing but spin at the lowest CPU priority Linux has (SCHED_IDLE).

    The floor of every 'during' figure on this machine: on a 2-core VM, a `while True: pass` that the kernel
    preempts for any other task still raised the read p99 by 1.4-1.9x (idle 5.6-7.8 ms, spinning 10.1-10.8 ms),
    so a job that keeps one core busy all the time costs the API that much, however it schedules itself."""
    spinner = multiprocessing.get_context("spawn").Process(target=_spin, daemon=True)
    spinner.start()
    try:
        return _counted_reads(client, patients, SPIN_READS, "one core spinning at the lowest priority")
    finally:
        spinner.kill()
        spinner.join()


def _counted_reads(client: FhirClient, patients: list[str], count: int, label: str) -> list[float]:
    """`count` reads timed by the probe process, their p50 and p99 printed under `label`."""
    with reads_meanwhile(client, patients, reads=count) as latencies:
        pass
    print(
        f"\n-- {label}: GET /fhir/Patient/[id] p50 {percentile_ms(latencies, 50):.1f} ms, "
        f"p99 {percentile_ms(latencies, 99):.1f} ms ({len(latencies)} reads)",
        flush=True,
    )
    return latencies


def _spin() -> None:
    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    while True:
        pass


@contextmanager
def reads_meanwhile(client: FhirClient, patients: list[str], *, reads: int | None = None) -> Iterator[list[float]]:
    """Reads back to back from one client while the block runs (or until `reads` were timed); the list yielded
    holds their timings once the block has ended.

    The client is a process of its own: in a thread of this one, each read would wait for the GIL behind the
    benchmark's own polling and sampling (Python switches threads every 5 ms), which inflated the 'during'
    figures by as much as the job did."""
    latencies: list[float] = []
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    receiver, sender = context.Pipe(duplex=False)
    probe = context.Process(target=_read_until, args=(client, patients, stop, reads, sender), daemon=True)
    probe.start()
    sender.close()
    try:
        if reads is not None:
            latencies.extend(receiver.recv())
        yield latencies
    finally:
        stop.set()
        if reads is None:
            latencies.extend(receiver.recv())
        probe.join()


def _read_until(client: FhirClient, patients: list[str], stop, reads: int | None, sender) -> None:
    timings: list[float] = []
    while not stop.is_set() and (reads is None or len(timings) < reads):
        timings.append(client.read_patient(random.choice(patients)))
    sender.send(timings)


def job_ended(job_id) -> bool:
    """Whether the job has ended, from its row (an index probe): cheap enough to ask every few milliseconds,
    where `control.get_job` computes the progress over all of the job's chunks."""
    from batch.models import JobInstance

    return JobInstance.objects.filter(id=job_id, end_time__isnull=False).exists()


def worker_rss(worker: Process) -> dict[int, tuple[str, int]]:
    """pid -> (role, RSS in bytes) of the worker's main process and its pool processes."""
    try:
        main = psutil.Process(worker.popen.pid)
        processes = [("main", main), *(("pool", child) for child in main.children(recursive=True))]
    except psutil.NoSuchProcess:
        return {}
    sizes = {}
    for role, process in processes:
        try:
            sizes[process.pid] = (role, process.memory_info().rss)
        except psutil.NoSuchProcess:
            continue
    return sizes


def fill(resources: int) -> None:
    """Add `resources` generated resources to the store (the bulk loader's path), then VACUUM ANALYZE."""
    from django.db import connection

    from fhirstore.loading import BulkLoader
    from fhirstore.synthetic import generate_resources, patient_count_for

    if resources > 0:
        started = time.monotonic()
        with BulkLoader() as loader:
            for resource in generate_resources(patient_count_for(resources), seed=stored()):
                loader.add(resource, "generated", None)
        print(f"\n-- fill: {loader.report.total:,} more resources in {time.monotonic() - started:.0f} s", flush=True)
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")  # what autovacuum does after a bulk load; index-only scans need it
        cursor.execute("SELECT pg_size_pretty(pg_database_size(current_database()))")
        print(f"store: {stored():,} resources, database {cursor.fetchone()[0]}", flush=True)


def stored() -> int:
    """Resources in the store, not deleted."""
    from fhirstore.models import Resource

    return Resource.objects.filter(deleted=False).count()


def api_token(username: str, *, staff: bool = False) -> str:
    from django.contrib.auth import get_user_model

    from jobsite.tokens import token_for

    user, _ = get_user_model().objects.get_or_create(username=username, defaults={"is_staff": staff})
    return token_for(user)


def _venv(command: str) -> str:
    """A command of this virtualenv (the Procfile's command lines name them bare)."""
    return str(Path(sys.executable).parent / command)


def _patient_ids(limit: int = 10_000) -> list[str]:
    from fhirstore.models import Resource

    return list(Resource.objects.filter(resource_type="Patient").values_list("logical_id", flat=True)[:limit])


def _wait_for_queue_consumer(node: str, worker: Process, timeout: float = STARTUP_SECONDS) -> None:
    from batch.queues import work_notification_queue
    from heavylift.celery import app

    queue = work_notification_queue(node)
    deadline = time.monotonic() + timeout
    while not any(
        declared["name"] == queue
        for queues in (app.control.inspect(timeout=1).active_queues() or {}).values()
        for declared in queues
    ):
        if time.monotonic() > deadline:
            raise SystemExit(f"no worker consumes {queue} after {timeout} s:\n{worker.tail()}")
