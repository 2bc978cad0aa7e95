"""Delete-expunge: resources deleted per second against plain SQL `DELETE … WHERE … = ANY(…)` over the same
tables in the same run, API latency meanwhile, and a small job end to end.

1. The store is filled with generated resources (`generate_fhir`'s bulk path) to `--resources`.
2. The baseline, first: one transaction of plain `DELETE … WHERE resource_id = ANY(%s)` over the six index
   tables, the versions, then the rows, of every Observation (what the job will delete), and the deferred
   foreign keys' checks its commit would run — rolled back, so the job finds the same rows. No listing, no
   pages, no referrer check: the physical limit of removing those rows. (Without the foreign keys' checks too,
   as measured before 2026-12-07: `job_vs_sql_unchecked`.)
2b. The same baseline again while `GET /fhir/Patient/[id]` runs back to back (the reads the job meets in 3,
   which compete with it for the cores): `job_vs_sql_under_reads` compares like with like.
3. `DELETE_EXPUNGE` of `Observation?` (batch size 1000, the default concurrency) on the standard Procfile worker,
   timed from the kick-off to COMPLETED, with `GET /fhir/Patient/[id]` timed back to back meanwhile (the
   Patients stay), against idle reads before and the floor of one core spinning at the lowest priority.
4. A small job: 10 `Basic` resources delete-expunged, kick-off to COMPLETED (the issue's bar: under 2 s; HAPI
   waited up to a minute per step for its maintenance tick before #7126).

It runs in a database of its own (`<DATABASE_URL's name>_bench_deleteexpunge`), created at start and dropped at
the end (`--keep` keeps it). `--json` prints the figures as one JSON object on the last line.

    python -m bench.bench_deleteexpunge [--resources 200000] [--batch-size N] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path

from bench.fhirstack import (
    fhir_stack,
    fill,
    idle_latencies,
    job_ended,
    reads_meanwhile,
    spinning_latencies,
    stored,
)
from bench.support import bench_database, percentile_ms

DELETED_TYPE = "Observation"  # the bulk of generated data, referenced by nothing generated; the probe reads Patients


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resources", type=int, default=200_000, help="store size")
    parser.add_argument("--batch-size", type=int, default=None, help="the job's batchSize (default: the job's)")
    parser.add_argument("--keep", action="store_true", help="keep the benchmark database")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON on the last line")
    options = parser.parse_args()

    node = f"bench-deleteexpunge-{uuid.uuid4().hex[:8]}"
    os.environ["NODE_ID"] = node  # this process starts the job: it goes to the bench worker's queue
    with bench_database("bench_deleteexpunge", keep=options.keep) as (_, bench_name):
        workdir = Path(tempfile.mkdtemp(prefix="bench-deleteexpunge-"))
        environment = {**os.environ, "JOB_SCHEDULING": "false", "LOG_LEVEL": "WARNING"}
        try:
            from django.conf import settings

            print(
                f"database {bench_name}; {os.cpu_count()} CPUs; worker processes {settings.BATCH_MAX_THREADS}; "
                f"delete-expunge chunks at once {settings.DELETE_EXPUNGE_MAX_CONCURRENT_CHUNKS or 'all'}",
                flush=True,
            )
            fill(options.resources - stored())
            load_before = os.getloadavg()[0]
            sql_seconds, unchecked_sql_seconds, sql_resources = plain_delete()
            with fhir_stack(node, environment, workdir, username="bench-deleteexpunge", staff=True) as stack:
                idle = idle_latencies(stack.client, stack.patients)
                spinning = spinning_latencies(stack.client, stack.patients)
                with reads_meanwhile(stack.client, stack.patients):
                    busy_sql_seconds, _, _ = plain_delete("while the same reads run")
                with reads_meanwhile(stack.client, stack.patients) as during:
                    job_seconds, deleted = delete_expunge(f"{DELETED_TYPE}?", options.batch_size)
                small_seconds, small = small_job()
            rate, sql_rate, busy_sql_rate, unchecked_sql_rate = (
                deleted / job_seconds,
                sql_resources / sql_seconds,
                sql_resources / busy_sql_seconds,
                sql_resources / unchecked_sql_seconds,
            )
            idle_p99, busy_p99, spin_p99 = (
                percentile_ms(idle, 99),
                percentile_ms(during, 99),
                percentile_ms(spinning, 99),
            )
            print(
                "\n== summary ==\n"
                f"delete-expunge      {deleted:,} {DELETED_TYPE} in {job_seconds:.1f} s = {rate:,.0f} resources/s; "
                f"plain SQL DELETE {sql_rate:,.0f} resources/s; ratio {rate / sql_rate:.2f} (goal >= 0.5); "
                f"plain SQL under the same reads {busy_sql_rate:,.0f} resources/s, ratio {rate / busy_sql_rate:.2f}; "
                f"plain SQL without the foreign keys' checks {unchecked_sql_rate:,.0f} resources/s, ratio "
                f"{rate / unchecked_sql_rate:.2f}\n"
                f"read latency        idle p99 {idle_p99:.1f} ms; during p99 {busy_p99:.1f} ms, ratio "
                f"{busy_p99 / idle_p99:.2f}; one core spinning p99 {spin_p99:.1f} ms, ratio {spin_p99 / idle_p99:.2f}\n"
                f"small job           {small} resources, kick-off to COMPLETED {small_seconds:.2f} s (goal < 2 s)",
                flush=True,
            )
            if options.json:
                print(
                    json.dumps(
                        {
                            "resources_deleted": deleted,
                            "job_seconds": round(job_seconds, 2),
                            "job_resources_per_second": round(rate),
                            "sql_delete_resources_per_second": round(sql_rate),
                            "job_vs_sql": round(rate / sql_rate, 3),
                            "sql_delete_under_reads_resources_per_second": round(busy_sql_rate),
                            "job_vs_sql_under_reads": round(rate / busy_sql_rate, 3),
                            "sql_delete_unchecked_resources_per_second": round(unchecked_sql_rate),
                            "job_vs_sql_unchecked": round(rate / unchecked_sql_rate, 3),
                            "read_p99_ms_idle": round(idle_p99, 1),
                            "read_p99_ms_during": round(busy_p99, 1),
                            "read_p99_ratio": round(busy_p99 / idle_p99, 2),
                            "read_p99_ratio_spinning": round(spin_p99 / idle_p99, 2),
                            "small_job_seconds": round(small_seconds, 2),
                            "reads_during": len(during),
                            "batch_size": options.batch_size,
                            "max_concurrent_chunks": settings.DELETE_EXPUNGE_MAX_CONCURRENT_CHUNKS,
                            "load_average_before": round(load_before, 2),
                            "load_average": round(os.getloadavg()[0], 2),
                        }
                    )
                )
        finally:
            shutil.rmtree(workdir, ignore_errors=True)


def plain_delete(conditions: str = "") -> tuple[float, float, int]:
    """Every DELETED_TYPE row, version and index row removed by plain statements in one transaction, rolled back.
    Timed twice: alone, then while the reads the job will meet run (the job competes with them for the cores).

    The time includes the foreign keys' checks, fired by `SET CONSTRAINTS ALL IMMEDIATE` before the rollback: the
    store's foreign keys are deferred, so a rolled-back DELETE never runs them, where a committed one (the job's
    pages) runs one check per deleted row and foreign key at its commit (~40 % of the whole here). Returns
    (seconds with the checks, seconds without them, rows)."""
    from django.db import connection, transaction

    from fhirstore.models import ResourceVersion
    from fhirstore.storage import INDEX_TABLES

    with connection.cursor() as cursor:
        cursor.execute("SELECT array_agg(id) FROM fhirstore_resource WHERE resource_type = %s", [DELETED_TYPE])
        pks = cursor.fetchone()[0] or []
    started = time.monotonic()
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            for table in [model._meta.db_table for model in INDEX_TABLES] + [ResourceVersion._meta.db_table]:
                cursor.execute(f"DELETE FROM {table} WHERE resource_id = ANY(%s)", [pks])
            cursor.execute("DELETE FROM fhirstore_resource WHERE id = ANY(%s)", [pks])
            unchecked = time.monotonic() - started
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # what the commit would do
            seconds = time.monotonic() - started
            raise _RollBack
    except _RollBack:
        pass
    print(
        f"\n-- plain SQL DELETE of {len(pks):,} {DELETED_TYPE} (rolled back) {conditions}: {seconds:.1f} s = "
        f"{len(pks) / seconds:,.0f} resources/s with the foreign keys' checks; without them {unchecked:.1f} s = "
        f"{len(pks) / unchecked:,.0f} resources/s",
        flush=True,
    )
    return seconds, unchecked, len(pks)


class _RollBack(Exception):
    pass


def delete_expunge(url: str, batch_size: int | None = None) -> tuple[float, int]:
    from batch import control
    from fhirjobs.deleteexpunge.parameters import DeleteExpungeRequest
    from fhirjobs.deleteexpunge.services import start_delete_expunge

    started = time.monotonic()
    job = start_delete_expunge(DeleteExpungeRequest((url,), batch_size=batch_size), started_by="bench")
    while not job_ended(job.id):
        time.sleep(0.01)
    seconds = time.monotonic() - started
    job = control.get_job(job.id)
    if job.status != control.JobStatus.COMPLETED:
        raise SystemExit(f"the delete-expunge ended {job.status}: {job.error_message}")
    return seconds, job.report["total"]


def small_job() -> tuple[float, int]:
    from django.db import transaction

    from fhirstore.authority import SERVER
    from fhirstore.storage import Write, save_resources

    with transaction.atomic():
        save_resources(
            [Write({"resourceType": "Basic", "id": f"bench-small-{n}", "code": {"text": "bench"}}) for n in range(10)],
            authority=SERVER,
        )
    seconds, deleted = delete_expunge("Basic?")
    print(f"\n-- small delete-expunge: {deleted} resources in {seconds:.2f} s", flush=True)
    return seconds, deleted


if __name__ == "__main__":
    main()
