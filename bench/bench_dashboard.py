"""The job dashboard's overview page with 10,000 jobs and 1,000,000 chunks: server time per view.

The rows are written with `generate_series` (jobs spread over a day, chunks ending evenly over the last two
hours, ~140 a second, so the throughput chart has something in every minute, 20 jobs still running with half their chunks done), then
the overview, the job list and a running job's page are rendered `--repeats` times each through Django's
test client as a superuser (whole stack: middleware, admin, templates). The baseline, in the same run, is
the admin's own index page.

It runs in a database of its own (`<DATABASE_URL's name>_dashboard`), created at start and dropped at the
end (`--keep` keeps it, `--reuse` measures a kept one).

    python -m bench.bench_dashboard [--jobs 10000] [--chunks 1000000] [--repeats 200] [--json] [--keep] [--reuse]
"""

from __future__ import annotations

import argparse
import json
import os
import time

from bench.support import bench_database, percentile_ms

RUNNING_JOBS = 20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--chunks", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.add_argument("--keep", action="store_true", help="keep the benchmark database")
    parser.add_argument("--reuse", action="store_true", help="measure the database a --keep run left")
    options = parser.parse_args()

    with bench_database("dashboard", reuse=options.reuse, keep=options.keep) as (_, name):
        print(f"database {name}; {os.cpu_count()} CPUs", flush=True)
        if not options.reuse:
            started = time.monotonic()
            fill(options.jobs, options.chunks)
            print(
                f"filled {options.jobs:,} jobs, {options.chunks:,} chunks in {time.monotonic() - started:.0f} s",
                flush=True,
            )
        figures = measure(options.repeats)
        for page, (p50, p99) in figures.items():
            print(f"{page:<28} p50 {p50:7.1f} ms   p99 {p99:7.1f} ms")
        if options.json:
            print(
                json.dumps(
                    {page: {"p50_ms": round(p50, 1), "p99_ms": round(p99, 1)} for page, (p50, p99) in figures.items()}
                )
            )


def fill(jobs: int, chunks: int) -> None:
    from django.db import connection

    per_job = max(chunks // jobs, 1)
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO batch_jobinstance (id, definition_id, definition_version, status, cancelled, parameters,
                create_time, start_time, end_time, update_time, combined_records_processed, progress, error_count,
                started_by, node_id, module_id, reducer_attempts)
            SELECT gen_random_uuid(), (ARRAY['BULK_EXPORT', 'DIAGNOSTIC_NOOP', 'REINDEX'])[1 + n %% 3], 1,
                   CASE WHEN n <= %s THEN 'IN_PROGRESS' ELSE (ARRAY['COMPLETED', 'COMPLETED', 'FAILED', 'CANCELLED'])[1 + n %% 4] END,
                   false, '{}'::jsonb, now() - n * interval '8 seconds', now() - n * interval '8 seconds',
                   CASE WHEN n <= %s THEN NULL ELSE now() - n * interval '8 seconds' + interval '5 seconds' END,
                   now(), %s, 1.0, 0, 'user' || (n %% 7), 'node-' || (n %% 3), 'batch', 0
            FROM generate_series(1, %s) AS n
            """,
            [RUNNING_JOBS, RUNNING_JOBS, per_job, jobs],
        )
        cursor.execute(
            """
            INSERT INTO batch_workchunk (id, instance_id, definition_id, definition_version, target_step_id, sequence,
                status, records_processed, error_count, create_time, start_time, end_time, update_time, poll_attempts,
                attempts, worker, task_id)
            SELECT gen_random_uuid(), job.id, job.definition_id, 1, 'step-' || (s %% 3), s,
                   CASE WHEN job.status = 'IN_PROGRESS' AND s %% 2 = 0 THEN 'QUEUED' ELSE 'COMPLETED' END,
                   1000, 0, now() - interval '2 hours', now() - spread.seconds * interval '1 second' - interval '1 second',
                   now() - spread.seconds * interval '1 second', now(), 0, 1, 'worker@host', ''
            FROM batch_jobinstance AS job, generate_series(1, %s) AS s,
                 LATERAL (SELECT abs(hashtext(job.id::text || s)) %% 7200 AS seconds) AS spread
            """,
            [per_job],
        )
        cursor.execute("ANALYZE batch_jobinstance; ANALYZE batch_workchunk")


def measure(repeats: int) -> dict[str, tuple[float, float]]:
    from django.contrib.auth import get_user_model
    from django.test import Client
    from django.urls import reverse

    from batch.models import JobInstance

    user, _ = get_user_model().objects.get_or_create(
        username="bench", defaults={"is_staff": True, "is_superuser": True}
    )
    client = Client(HTTP_HOST="localhost")
    client.force_login(user)
    running = JobInstance.objects.filter(status="IN_PROGRESS").values_list("id", flat=True).first()
    pages = {
        "admin index (baseline)": reverse("admin:index"),
        "dashboard overview": reverse("admin:batch_dashboard"),
        "job list": reverse("admin:batch_jobinstance_changelist"),
        "running job's page": reverse("admin:batch_jobinstance_change", args=[running]),
    }
    figures = {}
    for page, url in pages.items():
        assert client.get(url).status_code == 200, page
        timings = []
        for _ in range(repeats):
            started = time.perf_counter()
            client.get(url)
            timings.append(time.perf_counter() - started)
        figures[page] = (percentile_ms(timings, 50), percentile_ms(timings, 99))
    return figures


if __name__ == "__main__":
    main()
