import getpass

from django.core.management.base import BaseCommand, CommandError

from fhirjobs.common.commands import add_wait_argument, wait_for_job
from fhirjobs.terminology.services import delete_version
from fhirstore.exceptions import FhirStoreError


class Command(BaseCommand):
    help = (
        "Delete a version of a code system as a TERMINOLOGY_DELETE job (it stops answering at once; its rows "
        "go in chunks); prints the job's id. --wait follows it."
    )

    def add_arguments(self, parser):
        parser.add_argument("system", help="e.g. http://hl7.org/fhir/sid/icd-10-cm")
        parser.add_argument("version", help="the version's label")
        add_wait_argument(parser)

    def handle(self, *args, system: str, version: str, wait: bool, **options):
        try:
            job = delete_version(system, version, started_by=f"cli:{getpass.getuser()}")
        except FhirStoreError as error:
            raise CommandError(error.message) from None
        self.stdout.write(str(job.id))
        if wait:
            self.stdout.write(f"COMPLETED: {(wait_for_job(self, job.id).report or {}).get('rowsDeleted')}")
