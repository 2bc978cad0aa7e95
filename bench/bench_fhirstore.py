"""FHIR store: load throughput against a raw COPY of the same JSON, and search latency at scale.

1. Load: `--load-resources` generated resources are written as NDJSON files; the same files are loaded by
   `load_fhir` and by a raw `COPY` into a one-column jsonb table (the physical limit: no parsing in Python,
   no versions, no index rows). Both figures come from the same run on the same machine.
2. Search: the store is filled to `--resources` (1,000,000 by default) with `generate_fhir`'s bulk path,
   then every kind of search runs `--repeats` times through the REST stack (Django test client, Bearer
   token, JSON rendering) with parameters drawn from the data; p50 and p99 are printed per kind.

It runs in a database of its own (`<DATABASE_URL's name>_bench`), created at start and dropped at the end
(`--keep` keeps it), so it never touches your data.

    python -m bench.bench_fhirstore [--resources 1000000] [--load-resources 100000] [--repeats 200]
                                    [--keep] [--reuse]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import tempfile
import time
from pathlib import Path

import psycopg

from bench.support import bench_database, percentile_ms

COPY_CHUNK = 1 << 20  # bytes per write to the raw COPY: large enough that Python is not the bottleneck


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resources", type=int, default=1_000_000, help="store size for the search latencies")
    parser.add_argument("--load-resources", type=int, default=100_000, help="resources in the load comparison")
    parser.add_argument("--repeats", type=int, default=200, help="runs of each kind of search")
    parser.add_argument("--keep", action="store_true", help="keep the benchmark database")
    parser.add_argument("--reuse", action="store_true", help="search the database a --keep run left (no loading)")
    options = parser.parse_args()

    with bench_database("bench", reuse=options.reuse, keep=options.keep) as (bench_url, bench_name):
        workdir = Path(tempfile.mkdtemp(prefix="bench-fhirstore-"))
        try:
            print(f"database {bench_name}; {os.cpu_count()} CPUs", flush=True)
            if not options.reuse:
                loaded = bench_load(workdir, options.load_resources, bench_url)
                bench_fill(options.resources - loaded)
            bench_search(options.repeats)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)


def bench_load(workdir: Path, resources: int, database_url: str) -> int:
    from fhirjobs.bulkimport.inline import load_paths
    from fhirstore.synthetic import generate_resources, patient_count_for, write_ndjson

    ndjson = workdir / "ndjson"
    counts = write_ndjson(generate_resources(patient_count_for(resources), seed=1), ndjson)
    total = sum(counts.values())
    size = sum(path.stat().st_size for path in ndjson.iterdir())
    print(f"\n-- load: {total:,} resources, {size / 1e6:.0f} MB of NDJSON in {len(counts)} files", flush=True)

    with psycopg.connect(database_url, autocommit=True) as raw:
        raw.execute("CREATE UNLOGGED TABLE IF NOT EXISTS bench_raw_copy (body jsonb)")
        raw.execute("CREATE TABLE IF NOT EXISTS bench_raw_copy_logged (body jsonb)")
        unlogged_seconds = _raw_copy(raw, ndjson, "bench_raw_copy")
        logged_seconds = _raw_copy(raw, ndjson, "bench_raw_copy_logged")
        raw.execute("DROP TABLE bench_raw_copy, bench_raw_copy_logged")

    started = time.monotonic()
    report = load_paths(sorted(ndjson.iterdir()))
    load_seconds = time.monotonic() - started
    assert report.total == total and not report.bad, (report.total, report.bad[:3])

    print(
        f"raw COPY into a jsonb table (WAL-logged) {total / logged_seconds:>12,.0f} resources/s "
        f"({logged_seconds:.1f} s)"
    )
    print(
        f"raw COPY into an UNLOGGED jsonb table   {total / unlogged_seconds:>12,.0f} resources/s "
        f"({unlogged_seconds:.1f} s)"
    )
    print(
        f"load_fhir                               {total / load_seconds:>12,.0f} resources/s "
        f"({load_seconds:.1f} s) = {logged_seconds / load_seconds:.0%} of the logged COPY",
        flush=True,
    )
    return total


def _raw_copy(connection: psycopg.Connection, directory: Path, table: str) -> float:
    started = time.monotonic()
    with connection.cursor() as cursor:
        # CSV with quote and delimiter bytes that never occur in JSON: each line arrives verbatim.
        with cursor.copy(
            f"COPY {table} (body) FROM STDIN WITH (FORMAT csv, QUOTE e'\\x01', DELIMITER e'\\x02')"
        ) as copy:
            for path in sorted(directory.iterdir()):
                with path.open("rb") as file:
                    while chunk := file.read(COPY_CHUNK):
                        copy.write(chunk)
    return time.monotonic() - started


def bench_fill(resources: int) -> None:
    from django.db import connection

    from fhirstore.loading import BulkLoader
    from fhirstore.synthetic import generate_resources, patient_count_for

    if resources > 0:
        started = time.monotonic()
        with BulkLoader() as loader:
            for resource in generate_resources(patient_count_for(resources), seed=2):
                loader.add(resource, "generated", None)
        seconds = time.monotonic() - started
        print(
            f"\n-- fill: generate_fhir's bulk path stored {loader.report.total:,} more resources in {seconds:.0f} s "
            f"({loader.report.total / seconds:,.0f} resources/s)",
            flush=True,
        )
    started = time.monotonic()
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")  # what autovacuum does after a bulk load; index-only scans need it
        cursor.execute("SELECT count(*), pg_size_pretty(pg_database_size(current_database())) FROM fhirstore_resource")
        count, size = cursor.fetchone()
    print(f"store: {count:,} resources, database {size}; VACUUM ANALYZE {time.monotonic() - started:.0f} s", flush=True)


def bench_search(repeats: int) -> None:
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client

    from fhirstore.scan import compartment_ids_page, resource_ids_page
    from jobsite.tokens import token_for

    user, _ = get_user_model().objects.get_or_create(username="bench")
    client = Client(HTTP_AUTHORIZATION=f"Bearer {token_for(user)}", HTTP_HOST="localhost")
    rng = random.Random(3)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT logical_id, body->'name'->0->>'family', body->'identifier'->0->>'value'"
            " FROM fhirstore_resource WHERE resource_type = 'Patient' ORDER BY random() LIMIT 500"
        )
        patients = cursor.fetchall()
        cursor.execute("SELECT max(last_updated) FROM fhirstore_resource")
        newest = cursor.fetchone()[0]
        cursor.execute(
            "SELECT logical_id FROM fhirstore_resource WHERE resource_type = 'Observation' ORDER BY random() LIMIT 500"
        )
        observation_ids = [row[0] for row in cursor.fetchall()]
    synthea = "https://github.com/synthetichealth/synthea"
    recent = (newest.replace(microsecond=0)).strftime("%Y-%m-%dT%H:%M:%SZ")

    def get(url: str):
        def run():
            response = client.get(url)
            assert response.status_code == 200, (url, response.status_code, response.content[:300])
            return response

        return run

    def page_two(url: str):
        def run():
            first = client.get(url).json()
            next_url = next(link["url"] for link in first["link"] if link["relation"] == "next")
            started = time.perf_counter()
            assert client.get(next_url).status_code == 200
            return time.perf_counter() - started

        return run

    kinds = {
        "read Patient/id": lambda p: get(f"/fhir/Patient/{p[0]}"),
        "Patient?family=<prefix> (string)": lambda p: get(f"/fhir/Patient?family={p[1][:4]}"),
        "Patient?identifier=s|v (token)": lambda p: get(f"/fhir/Patient?identifier={synthea}|{p[2]}"),
        "Observation?subject=Patient/id (ref)": lambda p: get(f"/fhir/Observation?subject=Patient/{p[0]}"),
        "Observation?patient=id&category=laboratory": lambda p: get(
            f"/fhir/Observation?patient={p[0]}&category=laboratory"
        ),
        "Encounter?patient=id&date=ge2000 (ref+date)": lambda p: get(f"/fhir/Encounter?patient={p[0]}&date=ge2000"),
        "Observation?code=loinc|8867-4 (~10% of obs)": lambda p: get(
            "/fhir/Observation?code=http://loinc.org|8867-4&_count=20"
        ),
        "Condition?code=sct|44054006&_sort=-_lastUpdated": lambda p: get(
            "/fhir/Condition?code=http://snomed.info/sct|44054006&_sort=-_lastUpdated"
        ),
        "Observation?_lastUpdated=ge<newest> (date col)": lambda p: get(
            f"/fhir/Observation?_lastUpdated=ge{recent}&_count=20"
        ),
        "next page from the search cache": lambda p: page_two(f"/fhir/Observation?subject=Patient/{p[0]}&_count=5"),
        "export: compartment_ids_page(Observation, 1 pt)": lambda p: (
            lambda: compartment_ids_page("Observation", [p[0]])
        ),
        "export: resource_ids_page(Observation, 1000)": lambda p: (
            lambda: resource_ids_page("Observation", after=rng.choice(observation_ids))
        ),
    }
    print(f"\n-- search latency, {repeats} runs each, through the REST stack (ms)")
    print(f"{'query':<52}{'p50':>9}{'p99':>9}{'max':>9}")
    everything = []
    for name, make in kinds.items():
        make(patients[0])()  # warm the plan cache
        timings = []
        for _ in range(repeats):
            run = make(rng.choice(patients))
            started = time.perf_counter()
            result = run()
            timings.append(result if isinstance(result, float) else time.perf_counter() - started)
        everything.extend(timings)
        print(
            f"{name:<52}{percentile_ms(timings, 50):>9.1f}{percentile_ms(timings, 99):>9.1f}{max(timings) * 1000:>9.1f}",
            flush=True,
        )
    print(
        f"{'all of the above':<52}{percentile_ms(everything, 50):>9.1f}{percentile_ms(everything, 99):>9.1f}"
        f"{max(everything) * 1000:>9.1f}"
    )


if __name__ == "__main__":
    main()
