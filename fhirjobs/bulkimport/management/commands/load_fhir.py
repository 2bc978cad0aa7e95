import time

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from fhirjobs.bulkimport.inline import load_paths
from fhirstore.exceptions import InvalidRequest
from fhirstore.loading import LOAD_BATCH_SIZE, ordered_input_files, print_report


class Command(BaseCommand):
    help = (
        "Load FHIR NDJSON files (bulk-export layout, Type.000.ndjson[.gz]) and transaction bundles (Synthea's); "
        "directories are expanded. NDJSON goes through the BULK_IMPORT job's steps, run inline: urn:uuid and "
        "conditional references resolved, unchanged resources left alone. Bad lines are reported and skipped; "
        "exits non-zero if there were any."
    )

    def add_arguments(self, parser):
        parser.add_argument("paths", nargs="+", help="NDJSON files, bundle files, or directories of them")
        parser.add_argument("--batch-size", type=int, default=LOAD_BATCH_SIZE, help="lines per chunk (and transaction)")
        parser.add_argument("--no-progress", action="store_true", help="no progress bar")

    def handle(self, *args, paths: list[str], batch_size: int, no_progress: bool, **options):
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1")
        skipped: list = []
        try:
            files = ordered_input_files(paths, skipped)
        except InvalidRequest as error:
            raise CommandError(error.message) from None
        for path, why in skipped:
            self.stderr.write(f"skipped {path}: {why}")
        started = time.monotonic()
        total_bytes = sum(path.stat().st_size for path in files)
        with tqdm(
            total=total_bytes, unit="B", unit_scale=True, desc="load_fhir", disable=True if no_progress else None
        ) as bar:
            report = load_paths(files, batch_size=batch_size, progress=bar.update)
        print_report(self, report, time.monotonic() - started)
        if report.bad:
            raise CommandError(f"{len(report.bad)} inputs were rejected (listed above); everything else was loaded")
