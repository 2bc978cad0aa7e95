from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from batch.control import BatchError
from fhirjobs.bulkimport.exceptions import InvalidImportRequest
from fhirjobs.bulkimport.parameters import ImportRequest
from fhirjobs.bulkimport.services import kick_off
from fhirjobs.bulkimport.sources import check_source
from fhirjobs.common.commands import add_wait_argument, wait_for_job
from fhirstore.authority import SERVER  # a shell command: the server's own authority
from fhirstore.loading import ordered_input_files


class Command(BaseCommand):
    help = (
        "Start a BULK_IMPORT job of NDJSON sources: http(s) URLs under BULK_IMPORT_ALLOWED_SOURCES, or files and "
        "directories under BULK_IMPORT_FILE_ROOT. Prints the job id; --wait follows it with a progress bar and "
        "prints the report. (load_fhir runs the same steps inline, without workers.)"
    )

    def add_arguments(self, parser):
        parser.add_argument("sources", nargs="+", help="URLs, NDJSON files, or directories of them")
        parser.add_argument("--chunk-size", type=int, default=0, help="lines per load chunk (default: the setting)")
        parser.add_argument("--base-url", default="http://localhost:8000/fhir", help="FHIR base URL for the error file")
        add_wait_argument(parser)

    def handle(self, *args, sources: list[str], chunk_size: int, base_url: str, wait: bool, **options):
        if chunk_size < 0:
            raise CommandError("--chunk-size must be at least 1")
        urls = [url for source in sources for url in self._urls(source)]
        try:
            for url in urls:
                check_source(url)
            bulk_import = kick_off(
                None,
                ImportRequest(inputs=tuple({"type": "", "url": url} for url in urls), chunk_size=chunk_size),
                authority=SERVER,
                base_url=base_url,
            )
        except (InvalidImportRequest, BatchError) as error:
            raise CommandError(str(error)) from None
        self.stdout.write(f"import {bulk_import.id}: job {bulk_import.job_instance_id}")
        if not wait:
            return
        job = wait_for_job(self, bulk_import.job_instance_id)
        for resource_type, counts in job.report["counts"].items():
            self.stdout.write(
                f"{resource_type:<28}{counts['loaded']:>10} loaded {counts['unchanged']:>10} unchanged "
                f"{counts['failed']:>8} failed"
            )
        if job.report["errors"]:
            raise CommandError(f"{job.report['errors']} lines were rejected: {job.report['error_file']}")

    def _urls(self, source: str) -> list[str]:
        """A URL as it is; a file, or a directory's NDJSON files, as file:// URLs (a Bulk Data export's own
        log and manifest skipped, with a note)."""
        if "://" in source:
            return [source]
        path = Path(source).resolve()
        if not path.exists():
            raise CommandError(f"{source} does not exist")
        skipped: list = []
        files = ordered_input_files([path], skipped)
        for skipped_path, why in skipped:
            self.stderr.write(f"skipped {skipped_path}: {why}")
        return [file.as_uri() for file in files if path.is_file() or file.name.endswith((".ndjson", ".ndjson.gz"))]
