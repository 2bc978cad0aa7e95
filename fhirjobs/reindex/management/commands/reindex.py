import getpass

from django.core.management.base import BaseCommand, CommandError

from fhirjobs.common.commands import add_wait_argument, wait_for_job
from fhirjobs.reindex.parameters import ReindexRequest
from fhirjobs.reindex.services import start_reindex
from fhirstore.exceptions import FhirStoreError


class Command(BaseCommand):
    help = (
        "Start a REINDEX job over URL… (Type? or Type?search; none: every stored resource) and print its id; "
        "--wait follows it with a progress bar."
    )

    def add_arguments(self, parser):
        parser.add_argument("urls", nargs="*", metavar="URL", help="e.g. 'Patient?' or 'Observation?code=8867-4'")
        parser.add_argument("--batch-size", type=int, default=None, help="resources per chunk and transaction")
        parser.add_argument(
            "--search-parameter",
            action="append",
            default=[],
            dest="search_parameters",
            metavar="CODE",
            help="rebuild only this parameter's rows (repeatable)",
        )
        add_wait_argument(parser)

    def handle(
        self, *args, urls: list[str], batch_size: int | None, search_parameters: list[str], wait: bool, **options
    ):
        request = ReindexRequest(
            tuple(url if "?" in url else f"{url}?" for url in urls), batch_size, tuple(search_parameters)
        )
        try:
            job = start_reindex(request, started_by=f"cli:{getpass.getuser()}")
        except FhirStoreError as error:
            raise CommandError(error.message) from None
        self.stdout.write(str(job.id))
        if wait:
            self.stdout.write(f"COMPLETED: {wait_for_job(self, job.id).combined_records_processed} records")
