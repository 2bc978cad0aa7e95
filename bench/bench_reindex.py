"""Reindex: throughput against a set-based SQL rebuild of one token parameter, worker memory, API latency meanwhile.

1. The store is filled with generated resources (`generate_fhir`'s bulk path) to `--resources`.
2. A `REINDEX` of everything (no urls; every parameter, or those of `--search-parameter` as a SearchParameter
   change does; batch size 1000 or `--batch-size`) runs on the standard Procfile worker (`celery -A heavylift
   worker`, BATCH_MAX_THREADS processes), timed from the start to COMPLETED.
3. The physical limit, in the same run on the same store: one `INSERT … SELECT` that rebuilds the
   `identifier` token rows of every resource in SQL (`jsonb_array_elements`, no Python, no chunks) into a
   copy of the token table with the same primary key — one parameter, where the reindex does all of them.
4. Memory: the RSS of every worker process, sampled every 0.2 s; the peak in the first and in the second
   half of the reindex are compared (flat: no growth with the resources done).
5. Latency: `GET /fhir/Patient/[id]` with a Bearer token, back to back from one client, p50/p99 idle and
   during the reindex (the issue's bar: p99 during ÷ p99 idle ≤ 1.5). The idle reads are taken before
   and after the reindex and pooled: on a machine shared with others the load drifts over the minutes a
   reindex takes, and a baseline on both sides brackets it. The 1-minute load average is reported for each
   phase (idle before, the mean during the reindex, idle after), since it moves the figures more than
   anything here. The floor, in the same run: the reads while one process only spins at the lowest CPU
   priority (`spinning_latencies`): what any work keeping one core busy costs the API on this machine.

It runs in a database of its own (`<DATABASE_URL's name>_bench_reindex`), created at start and dropped at
the end (`--keep` keeps it, `--reuse` starts from a kept one). `--json` prints the figures as one JSON
object on the last line.

    python -m bench.bench_reindex [--resources 1000000] [--search-parameter identifier] [--batch-size N] [--json]
"""

from __future__ import annotations

import os
import statistics
import time

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

RSS_SAMPLE_SECONDS = 0.2


def main() -> None:
    parser = job_bench_arguments(__doc__, resources=1_000_000)
    parser.add_argument(
        "--search-parameter",
        action="append",
        default=[],
        help="reindex only this parameter's rows (a code; repeatable), as a SearchParameter change does",
    )
    parser.add_argument("--batch-size", type=int, default=None, help="resources per reindex page (default: the job's)")
    options = parser.parse_args()

    with job_bench("reindex", options) as bench:  # this process starts the job: it goes to the bench worker's queue
        from django.conf import settings

        print_setup(
            bench,
            f"reindex chunks at once {settings.REINDEX_MAX_CONCURRENT_CHUNKS or 'all'}; "
            f"index rows extracted in {'PostgreSQL' if settings.FHIR_INDEX_IN_DATABASE else 'Python'}; "
            f"parameters {', '.join(options.search_parameter) or 'all'}; batch size {options.batch_size or 'default'}",
        )
        fill(options.resources - stored())
        with fhir_stack(bench.node, bench.environment, bench.workdir, username="bench-reindex") as stack:
            load_before = os.getloadavg()[0]
            idle = idle_latencies(stack.client, stack.patients)
            spinning = spinning_latencies(stack.client, stack.patients)
            run = reindex(stack, tuple(options.search_parameter), options.batch_size)
            load_after = os.getloadavg()[0]
            idle_after = idle_latencies(stack.client, stack.patients)
        sql_seconds, sql_resources, sql_rows = sql_rebuild(bench.database_url)
        figures = summary(
            idle, idle_after, spinning, run, sql_seconds, sql_resources, sql_rows, options.search_parameter
        )
        figures.update(
            max_concurrent_chunks=settings.REINDEX_MAX_CONCURRENT_CHUNKS,
            index_in_database=settings.FHIR_INDEX_IN_DATABASE,
            search_parameters=options.search_parameter,
            batch_size=options.batch_size,
            load_idle_before=round(load_before, 2),
            load_reindex=round(statistics.mean(run["loads"]), 2),
            load_idle_after=round(load_after, 2),
        )
        print_json(options, figures)


def reindex(stack: FhirStack, search_parameters: tuple[str, ...], batch_size: int | None) -> dict:
    """A REINDEX of everything (of these parameters' rows only, if any), worker RSS sampled and reads timed."""
    from batch import control
    from fhirjobs.reindex.parameters import ReindexRequest
    from fhirjobs.reindex.services import start_reindex

    rss_samples: list[tuple[float, int]] = []  # (seconds since start, largest worker process RSS)
    loads: list[float] = []  # 1-minute load average, sampled with the RSS
    started = time.monotonic()
    job = start_reindex(ReindexRequest(batch_size=batch_size, search_parameters=search_parameters), started_by="bench")
    with reads_meanwhile(stack.client, stack.patients) as latencies:
        while not job_ended(job.id):  # not `control.get_job` every 0.2 s: load the benchmark itself added
            largest = max((rss for _, rss in worker_rss(stack.worker).values()), default=0)
            rss_samples.append((time.monotonic() - started, largest))
            loads.append(os.getloadavg()[0])
            time.sleep(RSS_SAMPLE_SECONDS)
        seconds = time.monotonic() - started
    job = control.get_job(job.id)
    if job.status != control.JobStatus.COMPLETED:
        raise SystemExit(f"the reindex ended {job.status}: {job.error_message}")
    half = seconds / 2
    first = max((rss for at, rss in rss_samples if at < half), default=0)
    second = max((rss for at, rss in rss_samples if at >= half), default=0)
    reindexed = stored()  # every stored, not deleted resource: what a reindex of everything rebuilds
    print(
        f"\n-- reindex: {reindexed:,} resources in {seconds:.1f} s = {reindexed / seconds:,.0f} resources/s "
        f"({job.step('load-ids').done} ranges, {job.step('reindex').done} pages)\n"
        f"   largest worker process RSS: first half {first / 2**20:.0f} MiB, second half {second / 2**20:.0f} MiB\n"
        f"   reads meanwhile: p50 {percentile_ms(latencies, 50):.1f} ms, p99 {percentile_ms(latencies, 99):.1f} ms "
        f"({len(latencies)} reads)",
        flush=True,
    )
    return {
        "resources": reindexed,
        "seconds": seconds,
        "rss_first_half": first,
        "rss_second_half": second,
        "latencies": latencies,
        "loads": loads,
    }


def sql_rebuild(database_url: str) -> tuple[float, int, int]:
    """One INSERT … SELECT rebuilding the `identifier` token rows of every resource into a copy of the table."""
    with psycopg.connect(database_url, autocommit=True) as connection:
        connection.execute("DROP TABLE IF EXISTS bench_tokenindex")
        connection.execute("CREATE TABLE bench_tokenindex (LIKE fhirstore_tokenindex INCLUDING ALL)")
        started = time.monotonic()
        inserted = connection.execute(
            "INSERT INTO bench_tokenindex (resource_type, param, system, code, resource_id)"
            " SELECT DISTINCT r.resource_type, 'identifier', left(coalesce(i->>'system', ''), 200),"
            " left(i->>'value', 200), r.id FROM fhirstore_resource r"
            " CROSS JOIN LATERAL jsonb_array_elements(CASE WHEN jsonb_typeof(r.body->'identifier') = 'array'"
            " THEN r.body->'identifier' ELSE '[]' END) i WHERE NOT r.deleted AND i->>'value' <> ''"
        ).rowcount
        seconds = time.monotonic() - started
        resources = connection.execute("SELECT count(*) FROM fhirstore_resource WHERE NOT deleted").fetchone()[0]
        connection.execute("DROP TABLE bench_tokenindex")
    print(
        f"\n-- INSERT … SELECT of the identifier token rows of {resources:,} resources ({inserted:,} rows): "
        f"{seconds:.1f} s = {resources / seconds:,.0f} resources/s",
        flush=True,
    )
    return seconds, resources, inserted


def summary(
    idle_before: list[float],
    idle_after: list[float],
    spinning: list[float],
    run: dict,
    sql_seconds: float,
    sql_resources: int,
    sql_rows: int,
    search_parameters: list[str],
) -> dict:
    rate, sql_rate = run["resources"] / run["seconds"], sql_resources / sql_seconds
    idle = idle_before + idle_after
    idle_p99, busy_p99, spin_p99 = (
        percentile_ms(idle, 99),
        percentile_ms(run["latencies"], 99),
        percentile_ms(spinning, 99),
    )
    print("\n== summary ==")
    print(
        f"reindex throughput  {rate:,.0f} resources/s ({run['resources']:,} resources, "
        f"{'parameters ' + ', '.join(search_parameters) if search_parameters else 'every parameter'}); "
        f"SQL rebuild of one token parameter {sql_rate:,.0f} resources/s; reindex = {rate / sql_rate:.1%} of it"
    )
    print(
        f"worker RSS          largest process {run['rss_first_half'] / 2**20:.0f} MiB in the first half, "
        f"{run['rss_second_half'] / 2**20:.0f} MiB in the second"
    )
    print(
        f"read latency        idle (before and after) p50 {percentile_ms(idle, 50):.1f} / p99 {idle_p99:.1f} ms "
        f"(p99 before {percentile_ms(idle_before, 99):.1f}, after {percentile_ms(idle_after, 99):.1f}); during the reindex "
        f"p50 {percentile_ms(run['latencies'], 50):.1f} / p99 {busy_p99:.1f} ms; p99 ratio {busy_p99 / idle_p99:.2f}\n"
        f"                    beside one core spinning at the lowest priority p99 {spin_p99:.1f} ms, ratio "
        f"{spin_p99 / idle_p99:.2f}: the floor of any job on this machine",
        flush=True,
    )
    return {
        "resources": run["resources"],
        "reindex_seconds": round(run["seconds"], 1),
        "reindex_resources_per_second": round(rate),
        "sql_rebuild_resources_per_second": round(sql_rate),
        "sql_rebuild_rows": sql_rows,
        "reindex_vs_sql": round(rate / sql_rate, 4),
        "worker_rss_mib_first_half": round(run["rss_first_half"] / 2**20),
        "worker_rss_mib_second_half": round(run["rss_second_half"] / 2**20),
        "read_p50_ms_idle": round(percentile_ms(idle, 50), 1),
        "read_p99_ms_idle": round(idle_p99, 1),
        "read_p99_ms_idle_before": round(percentile_ms(idle_before, 99), 1),
        "read_p99_ms_idle_after": round(percentile_ms(idle_after, 99), 1),
        "read_p50_ms_reindex": round(percentile_ms(run["latencies"], 50), 1),
        "read_p99_ms_reindex": round(busy_p99, 1),
        "read_p99_ratio": round(busy_p99 / idle_p99, 2),
        "read_p99_ms_spinning": round(spin_p99, 1),
        "read_p99_ratio_spinning": round(spin_p99 / idle_p99, 2),
        "reads_during_reindex": len(run["latencies"]),
    }


if __name__ == "__main__":
    main()
