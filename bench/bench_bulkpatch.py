"""Bulk patch: resources patched per second by the BULK_PATCH job, in this process.

N Observations are bulk-loaded; `$hapi.fhir.bulk-patch` of `Observation?` (replace `status` with `amended`,
batch size 1000) runs in the benchmark's process on the in-process bus (`batch.testing`): every step's real
work and transactions, without a worker's messaging. Timed from the kick-off to COMPLETED, then a dry run of
the same patch on the now-patched resources (all unchanged). A database of its own
(`<DATABASE_URL's name>_bench_bulkpatch`), dropped at the end (`--keep` keeps it).

    python -m bench.bench_bulkpatch [--resources 20000] [--json]
"""

from __future__ import annotations

import argparse
import json
import time

from bench.support import bench_database

AMEND = {
    "resourceType": "Parameters",
    "parameter": [
        {
            "name": "operation",
            "part": [
                {"name": "type", "valueCode": "replace"},
                {"name": "path", "valueString": "Observation.status"},
                {"name": "value", "valueCode": "amended"},
            ],
        }
    ],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resources", type=int, default=20_000, help="Observations to patch")
    parser.add_argument("--keep", action="store_true", help="keep the benchmark database")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON on the last line")
    options = parser.parse_args()

    with bench_database("bench_bulkpatch", keep=options.keep):
        from django.db import connection

        from batch import control
        from batch.testing import in_process_bus
        from fhirjobs.bulkpatch.services import start_bulk_patch
        from fhirstore.loading import BulkLoader

        with BulkLoader() as loader:
            for n in range(options.resources):
                loader.add(
                    {
                        "resourceType": "Observation",
                        "id": f"o{n:07}",
                        "status": "final",
                        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                    },
                    "bench",
                    None,
                )
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")

        seconds = {}
        for dry_run in (False, True):
            with in_process_bus() as bus:
                started = time.perf_counter()
                job = start_bulk_patch(
                    {"urls": ["Observation?"], "patch": AMEND, "dry_run": dry_run}, started_by="bench"
                )
                bus.drain()
                seconds[dry_run] = time.perf_counter() - started
            job = control.get_job(job.id)
            expected = ("unchanged" if dry_run else "total", options.resources)
            assert job.status == control.JobStatus.COMPLETED and job.report[expected[0]] == expected[1], job

    figures = {
        "resources": options.resources,
        "patch_seconds": round(seconds[False], 2),
        "patch_resources_per_second": round(options.resources / seconds[False]),
        "dry_run_seconds": round(seconds[True], 2),
    }
    print(
        f"BULK_PATCH of {options.resources} Observations: {seconds[False]:.2f} s "
        f"({figures['patch_resources_per_second']} resources/s); dry run (all unchanged): {seconds[True]:.2f} s"
    )
    if options.json:
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
