import getpass
import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from batch.control import BatchError, JobStatus, follow_job
from fhirjobs.bulkpatch.services import start_bulk_patch
from fhirstore.exceptions import FhirStoreError


class Command(BaseCommand):
    help = (
        "Start a BULK_PATCH job applying the FHIRPath Patch in PATCH_FILE (a Parameters, JSON) to what URL… "
        "(Type? or Type?search) match, and print its id. --wait follows it with a progress bar."
    )

    def add_arguments(self, parser):
        parser.add_argument("patch_file", metavar="PATCH_FILE", help="a FHIRPath Patch Parameters, as JSON")
        parser.add_argument("urls", nargs="+", metavar="URL", help="e.g. 'Observation?status=preliminary'")
        parser.add_argument("--dry-run", action="store_true", help="report what would change, write nothing")
        parser.add_argument("--batch-size", type=int, default=None, help="resources per chunk and transaction")
        parser.add_argument(
            "--wait", action="store_true", help="follow the job until it ends; non-zero exit unless it completes"
        )

    def handle(
        self, *args, patch_file: str, urls: list[str], dry_run: bool, batch_size: int | None, wait: bool, **options
    ):
        try:
            patch = json.loads(Path(patch_file).read_text())
        except (OSError, ValueError) as error:
            raise CommandError(f"{patch_file}: {error}") from None
        parameters = {"urls": [url if "?" in url else f"{url}?" for url in urls], "patch": patch, "dry_run": dry_run}
        if batch_size is not None:
            parameters["batch_size"] = batch_size
        try:
            job = start_bulk_patch(parameters, started_by=f"cli:{getpass.getuser()}")
        except FhirStoreError as error:
            raise CommandError(error.message) from None
        self.stdout.write(str(job.id))
        if not wait:
            return
        try:
            # The bar writes to the raw stream: Django's wrapper would end every redraw with a newline.
            job = follow_job(job.id, self.stderr._out)
        except BatchError as error:
            raise CommandError(str(error)) from None
        if job.status != JobStatus.COMPLETED:
            raise CommandError(f"job {job.id} {job.status}: {job.error_message or 'no message'}")
        self.stdout.write(f"COMPLETED: {job.report}")
