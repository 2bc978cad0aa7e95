import getpass

from django.core.management.base import BaseCommand, CommandError

from batch.control import BatchError, JobStatus, follow_job
from fhirjobs.terminology.services import delete_version
from fhirstore.exceptions import FhirStoreError


class Command(BaseCommand):
    help = ("Delete a version of a code system as a TERMINOLOGY_DELETE job (it stops answering at once; its rows "
            "go in chunks); prints the job's id. --wait follows it.")

    def add_arguments(self, parser):
        parser.add_argument("system", help="e.g. http://hl7.org/fhir/sid/icd-10-cm")
        parser.add_argument("version", help="the version's label")
        parser.add_argument("--wait", action="store_true",
                            help="follow the job until it ends; non-zero exit unless it completes")

    def handle(self, *args, system: str, version: str, wait: bool, **options):
        try:
            job = delete_version(system, version, started_by=f"cli:{getpass.getuser()}")
        except FhirStoreError as error:
            raise CommandError(error.message) from None
        self.stdout.write(str(job.id))
        if not wait:
            return
        try:
            job = follow_job(job.id, self.stderr._out)  # the raw stream: Django's wrapper adds newlines
        except BatchError as error:
            raise CommandError(str(error)) from None
        if job.status != JobStatus.COMPLETED:
            raise CommandError(f"job {job.id} {job.status}: {job.error_message or 'no message'}")
        self.stdout.write(f"COMPLETED: {(job.report or {}).get('rowsDeleted')}")
