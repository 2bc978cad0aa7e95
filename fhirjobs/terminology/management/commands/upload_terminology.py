import getpass
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from fhirjobs.common.commands import add_wait_argument, wait_for_job
from fhirjobs.common.sources import check_source
from fhirjobs.terminology.loaders import loader_for
from fhirjobs.terminology.parameters import UploadFile, UploadRequest
from fhirjobs.terminology.services import start_upload
from fhirstore.exceptions import FhirStoreError


class Command(BaseCommand):
    help = (
        "Upload a code system version from its distribution files (a path, read by this command and sent "
        "inline, or a URL the workers fetch) as a TERMINOLOGY_UPLOAD job; prints its id. --wait follows it."
    )

    def add_arguments(self, parser):
        parser.add_argument("system", help="e.g. http://hl7.org/fhir/sid/icd-10-cm")
        parser.add_argument("files", nargs="+", metavar="FILE", help="a path, or an http(s):// or file:// URL")
        parser.add_argument("--label", default="", help="the new version's label (default: the one the file declares)")
        parser.add_argument(
            "--dont-make-current", action="store_true", help="load it, but keep answering from the current version"
        )
        add_wait_argument(parser)

    def handle(self, *args, system: str, files: list[str], label: str, dont_make_current: bool, wait: bool, **options):
        try:
            request = UploadRequest(system, tuple(_file(name) for name in files), label, not dont_make_current)
            problems = loader_for(system).file_problems([upload_file.name for upload_file in request.files])
            if problems:
                raise CommandError("; ".join(problems))
            job = start_upload(request, started_by=f"cli:{getpass.getuser()}")
        except FhirStoreError as error:
            raise CommandError(error.message) from None
        self.stdout.write(str(job.id))
        if not wait:
            return
        report = wait_for_job(self, job.id).report or {}
        self.stdout.write(
            f"COMPLETED: {report.get('system')} version {report.get('version')} {report.get('status')}, "
            f"{report.get('concepts')} concepts, {report.get('closureRows')} closure rows"
        )


def _file(name: str) -> UploadFile:
    if "://" in name:
        check_source(name)
        return UploadFile(name, url=name)
    path = Path(name)
    if not path.is_file():
        raise CommandError(f"{name}: no such file")
    return UploadFile(path.name, data=path.read_bytes())
