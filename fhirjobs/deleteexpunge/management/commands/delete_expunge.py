import getpass

from django.core.management.base import BaseCommand, CommandError

from fhirjobs.common.commands import add_wait_argument, wait_for_job
from fhirjobs.deleteexpunge.parameters import DeleteExpungeRequest
from fhirjobs.deleteexpunge.services import start_delete_expunge
from fhirstore.exceptions import FhirStoreError


class Command(BaseCommand):
    help = (
        "Start a DELETE_EXPUNGE job over URL… (Type? or Type?search) and print its id; the resources go for "
        "good. --wait follows it with a progress bar."
    )

    def add_arguments(self, parser):
        parser.add_argument("urls", nargs="+", metavar="URL", help="e.g. 'Patient?active=false'")
        parser.add_argument("--batch-size", type=int, default=None, help="resources per chunk and transaction")
        parser.add_argument("--cascade", action="store_true", help="delete the resources that refer to them too")
        parser.add_argument("--cascade-max-rounds", type=int, default=None, help="levels of referrers (default 10)")
        add_wait_argument(parser)

    def handle(
        self,
        *args,
        urls: list[str],
        batch_size: int | None,
        cascade: bool,
        cascade_max_rounds: int | None,
        wait: bool,
        **options,
    ):
        request = DeleteExpungeRequest(
            tuple(url if "?" in url else f"{url}?" for url in urls), batch_size, cascade, cascade_max_rounds
        )
        try:
            job = start_delete_expunge(request, started_by=f"cli:{getpass.getuser()}")
        except FhirStoreError as error:
            raise CommandError(error.message) from None
        self.stdout.write(str(job.id))
        if wait:
            self.stdout.write(f"COMPLETED: {wait_for_job(self, job.id).report}")
