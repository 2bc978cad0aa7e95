"""Bulk Data STU3 export: `organizeOutputBy=Patient` against the plain system export, and partial manifests.

1. Organized ÷ plain (issue 26, goal ≥ 0.5): the store is filled with generated resources to `--resources`, and
   each round runs a plain system `$export` and one with `organizeOutputBy=Patient`, one after the other (A/B/A/B
   on a shared machine), over HTTP on the Procfile's web and worker processes, each timed from kick-off to the
   job's end; a raw COPY of the bodies is timed at the start of each round, for scale. The organized export's
   files hold a header line per Patient block besides the resources (manifest `count` counts the resources only,
   every Patient is in its own block). The organized export takes only the Patient-compartment types, so both
   rates are resources per second, and the ratio is of the rates.
2. Partial manifests (goal: the first file listed within 2 s of kick-off on a 1M export): an export kicked off
   with `allowPartialManifests=true`, its status URL polled every `PARTIAL_POLL_SECONDS` as a client would; the
   time from the kick-off to the first 202 whose manifest lists a file, and to the export's end.

    python -m bench.bench_export_stu3 [--resources 200000] [--rounds 2] [--parts organized,partial]
"""

from __future__ import annotations

import json
import os
import statistics
import time

from bench.bench_export import COPY_RUNS, STATUS_SECONDS, _job_instance_id, export, raw_copy
from bench.fhirstack import (
    FhirStack,
    fhir_stack,
    fill,
    job_bench,
    job_bench_arguments,
    job_ended,
    print_json,
    print_setup,
    stored,
)

PARTS = ("organized", "partial")
PARTIAL_POLL_SECONDS = 0.05  # a client polling this often; the first file is timed to within it


def main() -> None:
    parser = job_bench_arguments(__doc__, resources=200_000, resources_help="store size")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of each measurement (default 2)")
    parser.add_argument(
        "--parts", default=",".join(PARTS), help=f"what to measure, comma-separated of {', '.join(PARTS)}"
    )
    options = parser.parse_args()
    parts = [part.strip() for part in options.parts.split(",")]
    if set(parts) - set(PARTS):
        parser.error(f"--parts are of {', '.join(PARTS)}")

    figures: dict = {"resources": None}
    with job_bench("export", options) as bench:
        print_setup(bench, f"{options.rounds} round(s) of {', '.join(parts)}")
        fill(options.resources - stored())
        figures["resources"] = stored()
        with fhir_stack(bench.node, bench.environment, bench.workdir, username="bench-export") as stack:
            if "organized" in parts:
                figures["organized"] = organized_against_plain(stack, bench.database_url, bench.workdir, options.rounds)
            if "partial" in parts:
                figures["partial"] = first_partial_manifest(stack, options.rounds)
    print_json(options, figures)


def organized_against_plain(stack: FhirStack, database_url: str, workdir, rounds: int) -> dict:
    patients = _patients()
    runs = []
    for round_number in range(1, rounds + 1):
        copies = sorted(raw_copy(database_url, workdir / "copy.ndjson") for _ in range(COPY_RUNS))
        copy_seconds, copied = copies[COPY_RUNS // 2]
        load_before = os.getloadavg()[0]
        plain = export(stack)
        organized = export(stack, "?organizeOutputBy=Patient")
        organized_resources = organized.resources  # manifest counts: the header lines are not in them
        load = (load_before + os.getloadavg()[0]) / 2
        plain_rate, organized_rate = plain.resources / plain.seconds, organized_resources / organized.seconds
        runs.append(
            {
                "round": round_number,
                "load": round(load, 1),
                "copy_per_s": round(copied / copy_seconds),
                "plain_resources": plain.resources,
                "plain_seconds": round(plain.seconds, 2),
                "plain_per_s": round(plain_rate),
                "organized_resources": organized_resources,
                "organized_files": organized.files,
                "organized_seconds": round(organized.seconds, 2),
                "organized_per_s": round(organized_rate),
                "ratio": round(organized_rate / plain_rate, 3),
                "organized_peak_rss_mib": round(max(organized.peak_rss.values()) / 2**20),
            }
        )
        print(
            f"\n-- round {round_number} (load average {load:.1f}): plain {plain.resources:,} resources in "
            f"{plain.seconds:.1f} s = {plain_rate:,.0f}/s; organizeOutputBy=Patient {organized_resources:,} "
            f"resources ({patients:,} blocks, {organized.files} files) in {organized.seconds:.1f} s = "
            f"{organized_rate:,.0f}/s; ratio {organized_rate / plain_rate:.2f}; raw COPY {copied / copy_seconds:,.0f}/s; "
            f"organized peak RSS {max(organized.peak_rss.values()) / 2**20:.0f} MiB",
            flush=True,
        )
    ratio = statistics.median(run["ratio"] for run in runs)
    print(f"\n== organizeOutputBy=Patient ÷ plain system export: median {ratio:.2f} (goal ≥ 0.5)", flush=True)
    return {"ratio": round(ratio, 3), "runs": runs}


def first_partial_manifest(stack: FhirStack, rounds: int) -> dict:
    runs = []
    for round_number in range(1, rounds + 1):
        load_before = os.getloadavg()[0]
        started = time.monotonic()
        status_url = stack.client.kick_off("$export?allowPartialManifests=true")
        kicked_off = time.monotonic() - started
        instance_id = _job_instance_id(status_url)
        first_file = polls = None
        while first_file is None:
            response = stack.client.request("GET", status_url)
            polls = (polls or 0) + 1
            body = response.read()
            if body and json.loads(body).get("output"):
                first_file = time.monotonic() - started
            else:
                time.sleep(PARTIAL_POLL_SECONDS)
        while not job_ended(instance_id):
            time.sleep(STATUS_SECONDS)
        ended = time.monotonic() - started
        stack.client.request("DELETE", status_url)
        load = (load_before + os.getloadavg()[0]) / 2
        runs.append(
            {
                "round": round_number,
                "load": round(load, 1),
                "kick_off_seconds": round(kicked_off, 3),
                "first_file_seconds": round(first_file, 3),
                "polls": polls,
                "export_seconds": round(ended, 2),
            }
        )
        print(
            f"\n-- partial manifests, round {round_number} (load average {load:.1f}): kick-off answered in "
            f"{kicked_off:.2f} s; the first file listed {first_file:.2f} s after the kick-off ({polls} polls); "
            f"the export ended after {ended:.1f} s",
            flush=True,
        )
    first = statistics.median(run["first_file_seconds"] for run in runs)
    print(f"\n== partial manifest: first file listed after {first:.2f} s, median (goal ≤ 2 s)", flush=True)
    return {"first_file_seconds": round(first, 3), "runs": runs}


def _patients() -> int:
    from fhirstore.models import Resource

    return Resource.objects.filter(resource_type="Patient", deleted=False).count()


if __name__ == "__main__":
    main()
