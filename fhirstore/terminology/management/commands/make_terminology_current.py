from django.core.management.base import BaseCommand, CommandError

from fhirstore.exceptions import FhirStoreError
from fhirstore.terminology.storage import make_version_current


class Command(BaseCommand):
    help = (
        "Make a loaded version of a code system (uploaded with --dont-make-current, or superseded) the one "
        "that answers; the stored expansions using the system become stale."
    )

    def add_arguments(self, parser):
        parser.add_argument("system", help="e.g. http://hl7.org/fhir/sid/icd-10-cm")
        parser.add_argument("version", help="the version's label")

    def handle(self, *args, system: str, version: str, **options):
        try:
            made = make_version_current(system, version)
        except FhirStoreError as error:
            raise CommandError(error.message) from None
        self.stdout.write(f"{made.system} version {made.version} is {made.status}")
