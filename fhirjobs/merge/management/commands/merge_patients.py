import getpass

from django.core.management.base import BaseCommand, CommandError

from fhirjobs.merge.parameters import MergeRequest
from fhirjobs.merge.services import merge_patients
from fhirstore.exceptions import FhirStoreError


class Command(BaseCommand):
    help = (
        "Merge Patient SOURCE into Patient TARGET (logical ids), as Patient/$merge: in one transaction up to "
        "MERGE_SYNC_MAX_RESOURCES referrers, as a MERGE job with --async. Prints the answer's outcome (and Task)."
    )

    def add_arguments(self, parser):
        parser.add_argument("source", help="the source Patient's id (merged away)")
        parser.add_argument("target", help="the target Patient's id (it survives)")
        parser.add_argument("--preview", action="store_true", help="print what would change, write nothing")
        parser.add_argument("--delete-source", action="store_true", help="delete the source instead of linking it")
        parser.add_argument("--async", dest="asynchronous", action="store_true", help="run it as a MERGE job")
        parser.add_argument("--batch-size", type=int, default=None, help="the job's resources per chunk")

    def handle(
        self,
        *args,
        source: str,
        target: str,
        preview: bool,
        delete_source: bool,
        asynchronous: bool,
        batch_size: int | None,
        **options,
    ):
        request = MergeRequest(
            source_id=source, target_id=target, preview=preview, delete_source=delete_source, batch_size=batch_size
        )
        try:
            answer = merge_patients(request, started_by=f"cli:{getpass.getuser()}", asynchronous=asynchronous)
        except FhirStoreError as error:
            raise CommandError(error.message) from None
        for parameter in answer.body["parameter"]:
            if parameter["name"] == "outcome":
                self.stdout.write("\n".join(issue["diagnostics"] for issue in parameter["resource"]["issue"]))
            elif parameter["name"] == "task":
                self.stdout.write(f"Task/{parameter['resource']['id']}")
