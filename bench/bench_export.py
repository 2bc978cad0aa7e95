"""Bulk export: throughput against a raw COPY of the same bodies, worker memory, API latency meanwhile.

1. The store is filled with generated resources (`generate_fhir`'s bulk path) to a tenth of `--resources`,
   and a system `$export` runs over HTTP (gunicorn as in the Procfile) on the standard Procfile worker
   (`celery -A heavylift worker`, BATCH_MAX_THREADS processes); then it is filled to `--resources` and the
   export runs again. Each export is timed from kick-off to the manifest, and its files are counted.
2. The physical limit, in the same run on the full store: `COPY (SELECT body FROM fhirstore_resource …)
   TO STDOUT` into a file — no Python, no chunks, no second copy through the database; the median of three.
3. Memory: the peak RSS of every worker process during each export, sampled every 0.2 s (psutil). It must
   not grow with the export: the small and the full export are compared.
4. Latency: `GET /fhir/Patient/[id]` with a Bearer token, back to back from one client, p50/p99 with the
   system idle and while each export runs; beside them, in the same run, the reads during the raw COPY and
   beside one process spinning at the lowest CPU priority (`spinning_latencies`: the floor of any job).

It runs in a database of its own (`<DATABASE_URL's name>_bench_export`), created at start and dropped at
the end (`--keep` keeps it, `--reuse` starts from a kept one).

Storages compared (`--storage database,s3,files --rounds 2`, several storages or rounds): the store is filled
once to `--resources`, and each round exports it once per storage, in the same order every round (A/B/A/B on a
shared machine, so that every storage meets the same conditions), each on a stack of its own and beside a raw
COPY timed just before it: each export's ratio is to the COPY of its own moment. The load average is printed
with every run; `--json` gives every run and each storage's median ratio.

    python -m bench.bench_export [--resources 1000000] [--storage database,s3 --rounds 2]
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from bench.fhirstack import (
    FhirStack,
    fhir_stack,
    fill,
    idle_latencies,
    job_bench,
    job_bench_arguments,
    job_ended,
    print_json,
    print_setup,
    reads_meanwhile,
    spinning_latencies,
    stored,
    worker_rss,
)
from bench.support import percentile_ms
from tests.processes import Process

RSS_SAMPLE_SECONDS = 0.2  # often enough to catch a step's peak, cheap enough not to load the machine
STATUS_SECONDS = 0.02  # the job's status read from the database between polls: the end is timed to 20 ms
SMALL_FRACTION = 10  # the small export is this fraction of the full one
# COPY runs of the baseline, the median taken: on the shared machine one run alone swings by 3x (1.6-5.8 s for the
# same 200k resources within minutes), which made the ratio a measure of the moment more than of the export.
COPY_RUNS = 3


@dataclass
class ExportRun:
    resources: int
    files: int
    seconds: float
    peak_rss: dict[str, int]  # worker process (role/pid) -> bytes
    peak_rss_by_step: dict[str, int]  # step -> the largest RSS of a process while it ran a chunk of that step
    latencies: list[float] = field(default_factory=list)


STORAGES = ("database", "files", "s3", "s3-plain")
# The documented object store (objects gzip-compressed, uploads while the next part is read), and S3Storage as it
# was before either: each upload after the COPY of its whole range.
S3_BACKENDS = {
    "s3": ("blobstore.s3.GzipS3Storage", {}),
    "s3-plain": ("storages.backends.s3.S3Storage", {"BULK_EXPORT_UPLOAD_WHILE_READING": "false"}),
}


@contextmanager
def storage_settings(storage: str, workdir: Path) -> Iterator[dict[str, str]]:
    """The export storage's settings for the benchmark's processes: the database (the default), files in the
    work directory, or a bucket of an S3-compatible server (SeaweedFS) started for the run: `s3` with the
    documented backend and settings, `s3-plain` as before them (django-storages' S3Storage, uploads after reads)."""
    if storage == "files":
        yield {
            "BULK_EXPORT_STORAGE_BACKEND": "django.core.files.storage.FileSystemStorage",
            "BULK_EXPORT_STORAGE_OPTIONS": json.dumps({"location": str(workdir / "exports")}),
        }
    elif storage in S3_BACKENDS:
        # Imported here: importing `heavylift` sets Django up, which must wait until `bench_database` has
        # pointed DATABASE_URL at the benchmark's database.
        from heavylift.devobjectstore import create_bucket, running_object_store, storage_options

        with running_object_store(workdir / "seaweedfs") as store:
            create_bucket(store, "exports")
            backend, settings = S3_BACKENDS[storage]
            yield {
                **settings,
                "BULK_EXPORT_STORAGE_BACKEND": backend,
                "BULK_EXPORT_STORAGE_OPTIONS": json.dumps(storage_options(store, "exports")),
            }
    else:
        yield {}


def main() -> None:
    parser = job_bench_arguments(__doc__, resources=1_000_000, resources_help="store size of the full export")
    parser.add_argument(
        "--storage",
        type=storage_list,
        default=["database"],
        help=f"where the export files go, one or several comma-separated of {', '.join(STORAGES)} (default: the "
        "database, the default setting)",
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="with several storages: exports of each, interleaved (default 1)"
    )
    options = parser.parse_args()
    if len(options.storage) > 1 or options.rounds > 1:
        compare_storages(options)
        return
    options.storage = options.storage[0]

    with job_bench("export", options) as bench, ExitStack() as cleanup:  # the storage stops before the workdir goes
        workdir = bench.workdir
        environment = {**bench.environment, **cleanup.enter_context(storage_settings(options.storage, workdir))}
        from django.conf import settings

        print_setup(bench, f"chunk size {settings.BULK_EXPORT_CHUNK_SIZE}")
        fill(options.resources // SMALL_FRACTION - stored())
        with fhir_stack(bench.node, environment, workdir, username="bench-export") as stack:
            idle = idle_latencies(stack.client, stack.patients)
            spinning = spinning_latencies(stack.client, stack.patients)
            small = export(stack)
            report_export("small export", small)
            fill(options.resources - stored())
            with reads_meanwhile(stack.client, stack.patients) as copy_latencies:
                copies = sorted(raw_copy(bench.database_url, workdir / "copy.ndjson") for _ in range(COPY_RUNS))
            copy_seconds, copied = copies[COPY_RUNS // 2]
            print(
                f"\n-- COPY (SELECT body FROM fhirstore_resource WHERE NOT deleted) TO a file: {copied:,} "
                f"resources in {copy_seconds:.1f} s = {copied / copy_seconds:,.0f} resources/s (the median of "
                f"{', '.join(f'{seconds:.1f}' for seconds, _ in copies)} s)\n   reads meanwhile: p50 "
                f"{percentile_ms(copy_latencies, 50):.1f} ms, p99 {percentile_ms(copy_latencies, 99):.1f} ms "
                f"({len(copy_latencies)} reads): what the database's own export costs the API",
                flush=True,
            )
            full = export(stack)
        report_export("full export", full)
        summary(idle, spinning, small, full, copied / copy_seconds, copy_latencies)
        print_json(
            options,
            {"storage": options.storage, **figures(idle, spinning, small, full, copied / copy_seconds, copy_latencies)},
        )


def storage_list(text: str) -> list[str]:
    storages = [name.strip() for name in text.split(",") if name.strip()]
    if not storages or set(storages) - set(STORAGES):
        raise ValueError(f"storages are of {', '.join(STORAGES)}")
    return storages


def compare_storages(options) -> None:
    """Each round exports the whole store once per storage, each beside a raw COPY timed just before it."""
    runs = []
    with job_bench("export", options) as bench:
        from django.conf import settings

        print_setup(
            bench,
            f"chunk size {settings.BULK_EXPORT_CHUNK_SIZE}; storages {', '.join(options.storage)} interleaved, "
            f"{options.rounds} round(s)",
        )
        fill(options.resources - stored())
        for round_number in range(1, options.rounds + 1):
            for storage in options.storage:
                workdir = bench.workdir / f"{storage}-{round_number}"
                workdir.mkdir()
                with (
                    storage_settings(storage, workdir) as storage_environment,
                    fhir_stack(
                        bench.node, {**bench.environment, **storage_environment}, workdir, username="bench-export"
                    ) as stack,
                ):
                    load_before = os.getloadavg()[0]
                    copies = sorted(raw_copy(bench.database_url, workdir / "copy.ndjson") for _ in range(COPY_RUNS))
                    (workdir / "copy.ndjson").unlink()
                    copy_seconds, copied = copies[COPY_RUNS // 2]
                    run = export(stack)
                    load = (load_before + os.getloadavg()[0]) / 2
                rate, copy_rate = run.resources / run.seconds, copied / copy_seconds
                runs.append(
                    {
                        "round": round_number,
                        "storage": storage,
                        "load": round(load, 1),
                        "resources": run.resources,
                        "files": run.files,
                        "export_seconds": round(run.seconds, 2),
                        "export_per_s": round(rate),
                        "copy_per_s": round(copy_rate),
                        "ratio": round(rate / copy_rate, 3),
                        "peak_rss_mib": round(max(run.peak_rss.values()) / 2**20),
                        "read_p99_ms_during": round(percentile_ms(run.latencies, 99), 1),
                    }
                )
                print(
                    f"\n-- round {round_number}, {storage}: {run.resources:,} resources in {run.files} files, "
                    f"{run.seconds:.1f} s = {rate:,.0f} resources/s; raw COPY just before {copy_rate:,.0f} "
                    f"resources/s (median of {', '.join(f'{seconds:.1f}' for seconds, _ in copies)} s); ratio "
                    f"{rate / copy_rate:.2f}; load average {load:.1f}; peak RSS "
                    f"{max(run.peak_rss.values()) / 2**20:.0f} MiB",
                    flush=True,
                )
    ratios = {
        storage: round(statistics.median(run["ratio"] for run in runs if run["storage"] == storage), 3)
        for storage in options.storage
    }
    print("\n== summary: export ÷ raw COPY of the same moment, median over rounds ==")
    for storage, ratio in ratios.items():
        each = " / ".join(f"{run['ratio']:.2f} (load {run['load']})" for run in runs if run["storage"] == storage)
        print(f"{storage:10} {ratio:.2f}   ({each})", flush=True)
    print_json(options, {"storages": options.storage, "rounds": options.rounds, "ratio": ratios, "runs": runs})


def export(stack: FhirStack, query: str = "") -> ExportRun:
    """A system export over HTTP (`query`: its kick-off parameters, e.g. `?organizeOutputBy=Patient`), with
    worker RSS sampled and reads timed while it runs."""
    peak_rss: dict[str, int] = {}
    peak_rss_by_step: dict[str, int] = {}
    started = time.monotonic()
    status_url = stack.client.kick_off(f"$export{query}")
    instance_id = _job_instance_id(status_url)
    last_sample, manifest, seconds = 0.0, None, None
    with reads_meanwhile(stack.client, stack.patients) as latencies:
        while seconds is None:
            # A 2 s export timed by 0.5 s polls was off by up to a quarter: the end is seen in the database.
            if job_ended(instance_id):
                seconds = time.monotonic() - started
            elif time.monotonic() - last_sample >= RSS_SAMPLE_SECONDS:
                last_sample = time.monotonic()
                _sample_rss(stack.worker, peak_rss, _running_steps(instance_id), peak_rss_by_step)
            else:
                time.sleep(STATUS_SECONDS)
    while manifest is None:  # the manifest as a client gets it, once the job has ended
        manifest = stack.client.poll(status_url)
        if manifest is None:
            time.sleep(STATUS_SECONDS)
    stack.client.request("DELETE", status_url)
    return ExportRun(
        sum(output["count"] for output in manifest["output"]),
        len(manifest["output"]),
        seconds,
        peak_rss,
        peak_rss_by_step,
        latencies,
    )


def raw_copy(database_url: str, target: Path) -> tuple[float, int]:
    started = time.monotonic()
    lines = 0
    with psycopg.connect(database_url) as connection, connection.cursor() as cursor, target.open("wb") as out:
        with cursor.copy("COPY (SELECT body FROM fhirstore_resource WHERE NOT deleted) TO STDOUT") as copy:
            for block in copy:
                out.write(block)
                lines += bytes(block).count(b"\n")
    return time.monotonic() - started, lines


def report_export(title: str, run: ExportRun) -> None:
    rss = ", ".join(f"{name} {size / 2**20:.0f} MiB" for name, size in sorted(run.peak_rss.items()))
    by_step = ", ".join(f"{step} {size / 2**20:.0f} MiB" for step, size in run.peak_rss_by_step.items())
    print(
        f"\n-- {title}: {run.resources:,} resources in {run.files:,} files, {run.seconds:.1f} s = "
        f"{run.resources / run.seconds:,.0f} resources/s\n   peak RSS: {rss}\n   peak RSS of a process while it "
        f"ran a chunk of: {by_step}\n   reads meanwhile: "
        f"p50 {percentile_ms(run.latencies, 50):.1f} ms, p99 {percentile_ms(run.latencies, 99):.1f} ms ({len(run.latencies)} reads)",
        flush=True,
    )


def summary(
    idle: list[float],
    spinning: list[float],
    small: ExportRun,
    full: ExportRun,
    copy_rate: float,
    copy_latencies: list[float],
) -> None:
    rate = full.resources / full.seconds
    print("\n== summary ==")
    print(
        f"export throughput   {rate:,.0f} resources/s ({full.resources:,} resources); raw COPY {copy_rate:,.0f} "
        f"resources/s; export = {rate / copy_rate:.1%} of COPY"
    )
    print(
        f"worker peak RSS     largest process: {max(small.peak_rss.values()) / 2**20:.0f} MiB at "
        f"{small.resources:,} resources, {max(full.peak_rss.values()) / 2**20:.0f} MiB at {full.resources:,}"
    )
    print(
        f"read latency        idle p50 {percentile_ms(idle, 50):.1f} / p99 {percentile_ms(idle, 99):.1f} ms; during the full export "
        f"p50 {percentile_ms(full.latencies, 50):.1f} / p99 {percentile_ms(full.latencies, 99):.1f} ms (p99 ratio "
        f"{percentile_ms(full.latencies, 99) / percentile_ms(idle, 99):.2f}); during the raw COPY p99 "
        f"{percentile_ms(copy_latencies, 99):.1f} ms (ratio {percentile_ms(copy_latencies, 99) / percentile_ms(idle, 99):.2f}); "
        f"beside one core spinning at the lowest priority p99 {percentile_ms(spinning, 99):.1f} ms (ratio "
        f"{percentile_ms(spinning, 99) / percentile_ms(idle, 99):.2f})",
        flush=True,
    )


def figures(
    idle: list[float],
    spinning: list[float],
    small: ExportRun,
    full: ExportRun,
    copy_rate: float,
    copy_latencies: list[float],
) -> dict[str, float | int]:
    rate = full.resources / full.seconds
    return {
        "resources": full.resources,
        "files": full.files,
        "export_seconds": round(full.seconds, 2),
        "export_per_s": round(rate),
        "copy_per_s": round(copy_rate),
        "ratio": round(rate / copy_rate, 3),
        "small_resources": small.resources,
        "small_export_per_s": round(small.resources / small.seconds),
        "peak_rss_mib_small": round(max(small.peak_rss.values()) / 2**20),
        "peak_rss_mib": round(max(full.peak_rss.values()) / 2**20),
        "read_p50_ms_idle": round(percentile_ms(idle, 50), 1),
        "read_p99_ms_idle": round(percentile_ms(idle, 99), 1),
        "read_p50_ms_during": round(percentile_ms(full.latencies, 50), 1),
        "read_p99_ms_during": round(percentile_ms(full.latencies, 99), 1),
        "read_p99_ratio": round(percentile_ms(full.latencies, 99) / percentile_ms(idle, 99), 2),
        "read_p99_ms_during_copy": round(percentile_ms(copy_latencies, 99), 1),
        "read_p99_ratio_during_copy": round(percentile_ms(copy_latencies, 99) / percentile_ms(idle, 99), 2),
        "read_p99_ms_spinning": round(percentile_ms(spinning, 99), 1),
        "read_p99_ratio_spinning": round(percentile_ms(spinning, 99) / percentile_ms(idle, 99), 2),
    }


def _job_instance_id(status_url: str) -> str:
    from fhirjobs.bulkexport.models import BulkExport

    return BulkExport.objects.values_list("job_instance_id", flat=True).get(id=status_url.rsplit("=", 1)[1])


def _running_steps(instance_id: str) -> dict[int, str]:
    """pid -> the step of the chunk that process runs now (the reducer runs no chunk: FINALIZE)."""
    from batch.models import JobInstance, WorkChunk

    running = {
        int(worker.rsplit("/", 1)[1]): step
        for worker, step in WorkChunk.objects.filter(instance_id=instance_id, status="IN_PROGRESS").values_list(
            "worker", "target_step_id"
        )
        if "/" in worker
    }
    if JobInstance.objects.filter(id=instance_id, status="FINALIZE").exists():
        running.setdefault(-1, "create-report")
    return running


def _sample_rss(
    worker: Process, peak_rss: dict[str, int], steps: dict[int, str], peak_rss_by_step: dict[str, int]
) -> None:
    for pid, (role, rss) in worker_rss(worker).items():
        name = f"{role} {pid}"
        peak_rss[name] = max(peak_rss.get(name, 0), rss)
        step = steps.get(pid) or (steps.get(-1) if role == "pool" else None)
        if step is not None:
            peak_rss_by_step[step] = max(peak_rss_by_step.get(step, 0), rss)


if __name__ == "__main__":
    main()
