"""Patient `$merge`: seconds to merge a patient with N referring resources, as the MERGE job and in the request.

1. N Observations referring to one source patient (subject and performer) are bulk-loaded, with the two patients.
2. The MERGE job (pages of `--batch-size`) runs in this process on the in-process bus (`batch.testing`): every
   step's real work and transactions, without a worker's messaging. Timed from the kick-off to COMPLETED.
3. A synchronous merge of MERGE_SYNC_MAX_RESOURCES (512) referrers, in the request's one transaction, timed.

It runs in a database of its own (`<DATABASE_URL's name>_bench_merge`), dropped at the end (`--keep` keeps it).
`--json` prints the figures as one JSON object on the last line.

    python -m bench.bench_merge [--referrers 10000] [--batch-size 512] [--json]
"""

from __future__ import annotations

import argparse
import json
import time

from bench.support import bench_database


def observations(count: int, subject: str, prefix: str):
    for n in range(count):
        yield {
            "resourceType": "Observation",
            "id": f"{prefix}{n:06}",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "subject": {"reference": subject},
            "performer": [{"reference": subject}],
        }


def load(resources) -> None:
    from fhirstore.loading import BulkLoader

    with BulkLoader() as loader:
        for resource in resources:
            loader.add(resource, "bench", None)


def patients(*ids: str):
    return ({"resourceType": "Patient", "id": logical_id, "active": True} for logical_id in ids)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--referrers", type=int, default=10_000, help="resources referring to the source")
    parser.add_argument("--batch-size", type=int, default=512, help="the job's page size")
    parser.add_argument("--keep", action="store_true", help="keep the benchmark database")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON on the last line")
    options = parser.parse_args()

    with bench_database("bench_merge", keep=options.keep):
        from django.conf import settings
        from django.db import connection

        from batch import control
        from batch.testing import in_process_bus
        from fhirjobs.merge.parameters import MergeRequest
        from fhirjobs.merge.services import merge_patients

        load(patients("src", "tgt", "small-src", "small-tgt"))
        load(observations(options.referrers, "Patient/src", "o"))
        load(observations(settings.MERGE_SYNC_MAX_RESOURCES, "Patient/small-src", "s"))
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")

        with in_process_bus() as bus:
            started = time.perf_counter()
            answer = merge_patients(
                MergeRequest(source_id="src", target_id="tgt", batch_size=options.batch_size),
                started_by="bench",
                asynchronous=True,
            )
            bus.drain()
            job_seconds = time.perf_counter() - started
        task = next(p["resource"] for p in answer.body["parameter"] if p["name"] == "task")
        job = control.get_job(task["identifier"][0]["value"])
        assert job.status == control.JobStatus.COMPLETED and job.report["total"] == options.referrers, job

        started = time.perf_counter()
        merge_patients(
            MergeRequest(source_id="small-src", target_id="small-tgt"), started_by="bench", asynchronous=False
        )
        sync_seconds = time.perf_counter() - started

    figures = {
        "referrers": options.referrers,
        "batch_size": options.batch_size,
        "job_seconds": round(job_seconds, 2),
        "job_resources_per_second": round(options.referrers / job_seconds),
        "sync_referrers": settings.MERGE_SYNC_MAX_RESOURCES,
        "sync_seconds": round(sync_seconds, 2),
    }
    print(
        f"MERGE job, {options.referrers} referrers in pages of {options.batch_size}: {job_seconds:.2f} s "
        f"({figures['job_resources_per_second']} resources/s); synchronous merge of "
        f"{settings.MERGE_SYNC_MAX_RESOURCES} referrers: {sync_seconds:.2f} s"
    )
    if options.json:
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
