"""`$bulk-publish`: a conditional GET of the published manifest (`If-None-Match` → 304) under 100 clients at once.

The store is filled with generated resources to `--resources`; a publication (`BULK_PUBLISH`, here of every
Patient) is refreshed the way the clustered job does it (`refresh_publications`: start the export, then swap it in
once it has completed); then `--clients` clients, each a thread of one of `PROCESSES` processes (one process
each would start 100 Pythons; threads of one process would wait on its GIL), send `--requests` GETs each, back to
back, with the manifest's ETag in `If-None-Match`, against the Procfile's gunicorn (2 processes × 4 threads).
Timed per request; p50/p99 and requests/s. The baseline, in the same run and the same way: `GET
/fhir/Patient/[id]`, a read by id (one index probe), what the live API answers most.

    python -m bench.bench_publish [--resources 20000] [--clients 100] [--requests 10]
"""

from __future__ import annotations

import json
import multiprocessing
import os
import threading
import time
import urllib.error
import urllib.request

from bench.fhirstack import fhir_stack, fill, job_bench, job_bench_arguments, job_ended, print_json, print_setup, stored
from bench.support import percentile_ms

PROCESSES = 10  # the clients' processes; the clients are spread over them as threads
PUBLICATION = "bench"


def main() -> None:
    parser = job_bench_arguments(__doc__, resources=20_000, resources_help="store size")
    parser.add_argument("--clients", type=int, default=100, help="clients at once (default 100)")
    parser.add_argument("--requests", type=int, default=10, help="requests per client (default 10)")
    options = parser.parse_args()
    # Before Django is set up (job_bench): the bench process refreshes the publication, the web process serves it.
    os.environ["BULK_PUBLISH"] = json.dumps({PUBLICATION: {"parameters": "_type=Patient", "cadence_seconds": 86400}})

    with job_bench("publish", options) as bench:
        print_setup(bench, f"{options.clients} clients × {options.requests} requests, {PROCESSES} processes")
        fill(options.resources - stored())
        with fhir_stack(bench.node, bench.environment, bench.workdir, username="bench-publish") as stack:
            publish()
            url = f"{stack.client.base}/$bulk-publish?name={PUBLICATION}"
            first = stack.client.request("GET", url)
            etag, files = first.headers["ETag"], len(json.loads(first.read())["output"])
            headers = {**stack.client.headers, "If-None-Match": etag}
            load_before = os.getloadavg()[0]
            read_url = f"{stack.client.base}/Patient/{stack.patients[0]}"
            read = concurrent_gets(read_url, stack.client.headers, options, 200)
            published = concurrent_gets(url, headers, options, 304)
            load = (load_before + os.getloadavg()[0]) / 2
    figures = {"clients": options.clients, "requests": len(published.timings), "load": round(load, 1)}
    for name, run in (("publish_304", published), ("read", read)):
        figures |= {
            f"{name}_p50_ms": round(percentile_ms(run.timings, 50), 1),
            f"{name}_p99_ms": round(percentile_ms(run.timings, 99), 1),
            f"{name}_per_s": round(len(run.timings) / run.seconds),
        }
        print(
            f"\n-- {name}: {len(run.timings):,} GETs by {options.clients} clients at once in {run.seconds:.1f} s = "
            f"{len(run.timings) / run.seconds:,.0f}/s; p50 {percentile_ms(run.timings, 50):.1f} ms, p99 "
            f"{percentile_ms(run.timings, 99):.1f} ms",
            flush=True,
        )
    figures["p99_ratio"] = round(figures["publish_304_p99_ms"] / figures["read_p99_ms"], 2)
    print(
        f"\n== $bulk-publish with If-None-Match ({files} files published, load average {load:.1f}): p99 "
        f"{figures['publish_304_p99_ms']} ms under {options.clients} clients; GET Patient/[id] the same way "
        f"{figures['read_p99_ms']} ms (ratio {figures['p99_ratio']})",
        flush=True,
    )
    print_json(options, figures)


def publish() -> None:
    """What the clustered job does over two ticks: start the publication's export, then swap it in."""
    from fhirjobs.bulkexport.models import BulkExport
    from fhirjobs.bulkexport.publish import refresh_publications

    started = time.monotonic()
    refresh_publications()
    export = BulkExport.objects.order_by("-transaction_time").first()
    while not job_ended(export.job_instance_id):
        time.sleep(0.1)
    refresh_publications()
    print(f"\n-- published: the export of every Patient in {time.monotonic() - started:.1f} s", flush=True)


class Run:
    def __init__(self, timings: list[float], seconds: float):
        self.timings, self.seconds = timings, seconds


def concurrent_gets(url: str, headers: dict, options, status: int) -> Run:
    """`options.clients` clients at once, `options.requests` GETs each; any other status than `status` fails."""
    context = multiprocessing.get_context("spawn")
    per_process = [options.clients // PROCESSES + (n < options.clients % PROCESSES) for n in range(PROCESSES)]
    start = context.Event()
    receiver, sender = context.Pipe(duplex=False)
    processes = [
        context.Process(target=_clients, args=(url, headers, count, options.requests, status, start, sender))
        for count in per_process
        if count
    ]
    for process in processes:
        process.start()
    time.sleep(2)  # every process started (spawn) and waiting
    began = time.monotonic()
    start.set()
    timings: list[float] = []
    for _ in processes:
        timings.extend(receiver.recv())
    seconds = time.monotonic() - began
    for process in processes:
        process.join()
    return Run(timings, seconds)


def _clients(url, headers, count, requests, status, start, sender) -> None:
    timings: list[float] = []
    lock = threading.Lock()

    def client() -> None:
        mine = []
        for _ in range(requests):
            began = time.perf_counter()
            try:
                with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=60) as response:
                    response.read()
                    code = response.status
            except urllib.error.HTTPError as error:
                code = error.code
            mine.append(time.perf_counter() - began)
            if code != status:
                raise SystemExit(f"GET {url}: {code}, expected {status}")
        with lock:
            timings.extend(mine)

    start.wait()
    threads = [threading.Thread(target=client) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    sender.send(timings)


if __name__ == "__main__":
    main()
