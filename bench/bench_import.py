"""Bulk import: throughput against a raw COPY of the same NDJSON, worker memory, API latency meanwhile.

1. `--resources` generated resources (Synthea-shaped, `generate_fhir`) are written as NDJSON files.
2. The physical limit, in the same run: `COPY … FROM STDIN` of those files into a bare jsonb table (WAL-logged,
   as the store's tables are) — no parsing in Python, no versions, no index rows.
3. The import: `POST /fhir/$import` (Prefer: respond-async) of the files as file:// URLs, over HTTP (gunicorn
   as in the Procfile), run by the standard Procfile worker (`celery -A heavylift worker`, BATCH_MAX_THREADS
   processes), timed from kick-off to the final OperationOutcome. Then the same files once more: every
   resource unchanged, no new version.
4. The store's own limit, after the import: the rows the import wrote (resources and index rows) inserted
   again into empty copies of the store's tables, with their indexes, by one `INSERT … SELECT` per table —
   the database work of writing this data into this schema, with no Python, parsing or round trips. Its
   ratio to the raw COPY bounds what any import into this schema can reach.
5. Memory: the peak RSS of every worker process during the import (psutil, every 0.2 s).
6. Latency: `GET /fhir/Patient/[id]` back to back from one client, p50/p99 with the system idle and while the
   import runs (the store holds a few thousand resources beforehand, so there is something to read); beside
   them, in the same run, the reads beside one process spinning at the lowest CPU priority
   (`spinning_latencies`: the floor of any job on this machine).

It runs in a database of its own (`<DATABASE_URL's name>_bench_import`), created at start and dropped at the end.

With `--submit` the files are imported by `$bulk-submit` of a manifest listing them instead (polled by
`$bulk-submit-status`): a submission's import also records every version it writes (`ImportWrite`, what a
`stopped` submission undoes), so the two runs back to back give that record's cost.

    python -m bench.bench_import [--resources 200000] [--submit] [--json]
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import psycopg

from bench.fhirstack import (
    FhirStack,
    fhir_stack,
    idle_latencies,
    job_bench,
    job_bench_arguments,
    print_json,
    print_setup,
    reads_meanwhile,
    spinning_latencies,
    worker_rss,
)
from bench.support import percentile_ms

COPY_CHUNK = 1 << 20
SEED_RESOURCES = 5_000  # in the store before the import, so that reads have patients to read
RSS_SAMPLE_SECONDS = 0.2
POLL_SECONDS = 0.5
IMPORT_TIMEOUT_SECONDS = 3600


def main() -> None:
    parser = job_bench_arguments(__doc__, resources=200_000, resources_help="resources imported", reuse=False)
    parser.add_argument("--submit", action="store_true", help="import by $bulk-submit of a manifest, not $import")
    options = parser.parse_args()

    with job_bench("import", options) as bench:
        workdir, bench_url = bench.workdir, bench.database_url
        inputs = workdir / "inputs"
        environment = {**bench.environment, "BULK_IMPORT_FILE_ROOT": str(workdir)}  # inputs/ and a manifest
        from django.conf import settings

        print_setup(
            bench,
            f"chunk size {settings.BULK_IMPORT_CHUNK_SIZE}, by {'$bulk-submit' if options.submit else '$import'}; "
            f"index rows extracted in {'PostgreSQL' if settings.FHIR_INDEX_IN_DATABASE else 'Python'}",
        )
        seed(workdir / "seed")
        total, size = write_inputs(inputs, options.resources)
        print(f"\n-- input: {total:,} resources, {size / 1e6:.0f} MB of NDJSON", flush=True)
        copy_seconds = raw_copy(bench_url, inputs)
        print(
            f"raw COPY into a jsonb table: {copy_seconds:.1f} s = {total / copy_seconds:,.0f} resources/s", flush=True
        )
        with fhir_stack(bench.node, environment, workdir, username="bench-import", staff=True) as stack:
            idle = idle_latencies(stack.client, stack.patients)
            spinning = spinning_latencies(stack.client, stack.patients)
            first = run_import(stack, inputs, workdir, submission="first" if options.submit else None)
            again = run_import(stack, inputs, workdir, submission="again" if options.submit else None)
        schema_seconds = schema_insert(bench_url)
        print(
            f"\n-- the imported rows inserted again into empty copies of the store's tables (with their indexes):"
            f" {schema_seconds:.1f} s = {total / schema_seconds:,.0f} resources/s",
            flush=True,
        )
        figures = {
            "index_in_database": settings.FHIR_INDEX_IN_DATABASE,
            "resources": total,
            "by": "$bulk-submit" if options.submit else "$import",
            "copy_resources_per_s": round(total / copy_seconds),
            "import_seconds": round(first["seconds"], 1),
            "import_resources_per_s": round(total / first["seconds"]),
            "ratio_to_copy": round(copy_seconds / first["seconds"], 3),
            "schema_insert_resources_per_s": round(total / schema_seconds),
            "schema_insert_ratio_to_copy": round(copy_seconds / schema_seconds, 3),
            "import_ratio_to_schema_insert": round(schema_seconds / first["seconds"], 3),
            "reimport_seconds": round(again["seconds"], 1),
            "reimport_outcome": again["outcome"],
            "outcome": first["outcome"],
            "worker_peak_rss_mib": round(max(first["rss"].values()) / 2**20),
            "idle_read_p50_ms": round(percentile_ms(idle, 50), 1),
            "idle_read_p99_ms": round(percentile_ms(idle, 99), 1),
            "import_read_p50_ms": round(percentile_ms(first["latencies"], 50), 1),
            "import_read_p99_ms": round(percentile_ms(first["latencies"], 99), 1),
            "reads_during_import": len(first["latencies"]),
            "spinning_read_p99_ms": round(percentile_ms(spinning, 99), 1),
        }
        print(
            f"\n== summary ==\nimport      {figures['import_resources_per_s']:,} resources/s "
            f"({total:,} in {figures['import_seconds']} s): {first['outcome']}\n"
            f"raw COPY    {figures['copy_resources_per_s']:,} resources/s; import = "
            f"{figures['ratio_to_copy']:.1%} of COPY\n"
            f"store tables {figures['schema_insert_resources_per_s']:,} resources/s by INSERT … SELECT alone = "
            f"{figures['schema_insert_ratio_to_copy']:.1%} of COPY; the import = "
            f"{figures['import_ratio_to_schema_insert']:.1%} of it\n"
            f"re-import   {figures['reimport_seconds']} s: {again['outcome']}\n"
            f"worker RSS  peak {figures['worker_peak_rss_mib']} MiB (largest process)\n"
            f"reads       idle p50 {figures['idle_read_p50_ms']} / p99 {figures['idle_read_p99_ms']} ms; during "
            f"the import p50 {figures['import_read_p50_ms']} / p99 {figures['import_read_p99_ms']} ms "
            f"({figures['reads_during_import']} reads); ratio p99 "
            f"{figures['import_read_p99_ms'] / figures['idle_read_p99_ms']:.2f}; beside one core spinning at the "
            f"lowest priority p99 {figures['spinning_read_p99_ms']} ms, ratio "
            f"{figures['spinning_read_p99_ms'] / figures['idle_read_p99_ms']:.2f}",
            flush=True,
        )
        print_json(options, figures)


def seed(directory: Path) -> None:
    from fhirjobs.bulkimport.inline import load_paths
    from fhirstore.synthetic import generate_resources, patient_count_for, write_ndjson

    write_ndjson(generate_resources(patient_count_for(SEED_RESOURCES), seed=99), directory)
    load_paths(sorted(directory.iterdir()))
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")


def write_inputs(directory: Path, resources: int) -> tuple[int, int]:
    from fhirstore.synthetic import generate_resources, patient_count_for, write_ndjson

    counts = write_ndjson(generate_resources(patient_count_for(resources), seed=1), directory)
    return sum(counts.values()), sum(path.stat().st_size for path in directory.iterdir())


def raw_copy(database_url: str, directory: Path) -> float:
    with psycopg.connect(database_url, autocommit=True) as raw:
        raw.execute("CREATE TABLE bench_raw_copy (body jsonb)")
        started = time.monotonic()
        with raw.cursor() as cursor:
            # CSV with quote and delimiter bytes that never occur in JSON: each line arrives verbatim.
            with cursor.copy(
                "COPY bench_raw_copy (body) FROM STDIN WITH (FORMAT csv, QUOTE e'\\x01', DELIMITER e'\\x02')"
            ) as copy:
                for path in sorted(directory.iterdir()):
                    with path.open("rb") as file:
                        while chunk := file.read(COPY_CHUNK):
                            copy.write(chunk)
        seconds = time.monotonic() - started
        raw.execute("DROP TABLE bench_raw_copy")
    return seconds


def schema_insert(database_url: str) -> float:
    """Seconds to insert the store's rows again into empty copies of its tables (indexes included)."""
    from fhirstore.models import Resource
    from fhirstore.storage import INDEX_TABLES

    store_tables = [model._meta.db_table for model in (Resource, *INDEX_TABLES)]
    with psycopg.connect(database_url, autocommit=True) as raw:
        for table in store_tables:
            raw.execute(f"CREATE TABLE bench_{table} (LIKE {table} INCLUDING ALL)")
        try:
            started = time.monotonic()
            with raw.transaction():
                for table in store_tables:
                    raw.execute(f"INSERT INTO bench_{table} SELECT * FROM {table}")
            return time.monotonic() - started
        finally:
            for table in store_tables:
                raw.execute(f"DROP TABLE bench_{table}")


def run_import(stack: FhirStack, inputs: Path, workdir: Path, submission: str | None = None) -> dict:
    """`$import` of every file in `inputs` (or `$bulk-submit` of a manifest of them, as `submission`), with worker
    RSS sampled and reads timed while it runs."""
    peak_rss: dict[int, int] = {}
    started = time.monotonic()
    status_url = (
        submit(stack, inputs, workdir, submission)
        if submission
        else stack.client.kick_off(
            "$import",
            {
                "resourceType": "Parameters",
                "parameter": [
                    {"name": "inputFormat", "valueCode": "application/fhir+ndjson"},
                    *(
                        {"name": "input", "part": [{"name": "url", "valueUri": path.as_uri()}]}
                        for path in sorted(inputs.iterdir())
                    ),
                ],
            },
        )
    )
    last_poll, outcome = 0.0, None
    with reads_meanwhile(stack.client, stack.patients) as latencies:
        while outcome is None:
            if time.monotonic() - started > IMPORT_TIMEOUT_SECONDS:
                raise SystemExit(
                    f"the import did not finish in {IMPORT_TIMEOUT_SECONDS} s:\n{stack.web.tail()}\n{stack.worker.tail()}"
                )
            for pid, (_, rss) in worker_rss(stack.worker).items():
                peak_rss[pid] = max(peak_rss.get(pid, 0), rss)
            if time.monotonic() - last_poll >= POLL_SECONDS:
                last_poll = time.monotonic()
                outcome = stack.client.poll(status_url)
            else:
                time.sleep(RSS_SAMPLE_SECONDS)
        seconds = time.monotonic() - started
    if submission:
        counts = {"loaded or unchanged": sum(item["count"] for item in outcome["output"]), "errors": outcome["error"]}
        return {"seconds": seconds, "rss": peak_rss, "latencies": latencies, "outcome": json.dumps(counts)}
    return {"seconds": seconds, "rss": peak_rss, "latencies": latencies, "outcome": outcome["issue"][0]["diagnostics"]}


def submit(stack: FhirStack, inputs: Path, workdir: Path, submission: str) -> str:
    """A completed submission of one manifest listing the files; the status URL of `$bulk-submit-status`."""
    manifest = workdir / f"manifest-{submission}.json"
    manifest.write_text(
        json.dumps({"output": [{"type": "", "url": path.as_uri()} for path in sorted(inputs.iterdir())]})
    )
    key = [
        {"name": "submitter", "valueIdentifier": {"system": "https://example.org/bench", "value": "bench"}},
        {"name": "submissionId", "valueString": submission},
    ]
    body = {
        "resourceType": "Parameters",
        "parameter": [
            *key,
            {"name": "manifestUrl", "valueUrl": manifest.as_uri()},
            {"name": "submissionStatus", "valueCoding": {"code": "completed"}},
        ],
    }
    stack.client.request(
        "POST",
        f"{stack.client.base}/$bulk-submit",
        {"Content-Type": "application/fhir+json"},
        json.dumps(body).encode(),
    )
    return stack.client.kick_off("$bulk-submit-status", {"resourceType": "Parameters", "parameter": key})


if __name__ == "__main__":
    main()
