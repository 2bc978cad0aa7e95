import time
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from fhirstore.loading import LOAD_BATCH_SIZE, BulkLoader, print_report
from fhirstore.synthetic import RESOURCES_PER_PATIENT, generate_resources, write_ndjson


class Command(BaseCommand):
    help = (
        f"Generate deterministic Synthea-shaped data (~{RESOURCES_PER_PATIENT} resources per patient) and load it "
        "through the bulk loader, or write it as NDJSON files with --output."
    )

    def add_arguments(self, parser):
        parser.add_argument("--patients", type=int, required=True)
        parser.add_argument("--seed", type=int, default=0, help="the same seed gives the same resources and ids")
        parser.add_argument("--output", type=Path, help="write Type.000.ndjson files into this directory instead")
        parser.add_argument("--batch-size", type=int, default=LOAD_BATCH_SIZE, help="resources per transaction")
        parser.add_argument("--no-progress", action="store_true", help="no progress bar")

    def handle(
        self, *args, patients: int, seed: int, output: Path | None, batch_size: int, no_progress: bool, **options
    ):
        if patients < 1 or batch_size < 1:
            raise CommandError("--patients and --batch-size must be at least 1")
        started = time.monotonic()
        resources = tqdm(
            generate_resources(patients, seed),
            total=patients * RESOURCES_PER_PATIENT,
            unit=" resources",
            desc="generate_fhir",
            disable=True if no_progress else None,
        )
        if output is not None:
            counts = write_ndjson(resources, output)
            self.stdout.write(
                f"wrote {sum(counts.values())} resources to {output} in {time.monotonic() - started:.1f} s"
            )
            return
        with BulkLoader(batch_size=batch_size) as loader:
            for resource in resources:
                loader.add(resource, "generated", None)
        print_report(self, loader.report, time.monotonic() - started)
        if loader.report.bad:
            raise CommandError(f"{len(loader.report.bad)} generated resources were rejected (listed above)")
