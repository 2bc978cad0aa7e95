import getpass
import json

from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError

from batch.control import BatchError, JobStatus, follow_job, start_job


class Command(BaseCommand):
    help = "Start a batch job and print its instance id; --wait follows it with a progress bar."

    def add_arguments(self, parser):
        parser.add_argument("definition_id", help="e.g. DIAGNOSTIC_NOOP")
        parser.add_argument("--params", default="{}", help="job parameters as a JSON object, e.g. '{\"chunks\": 10}'")
        parser.add_argument(
            "--max-concurrent-chunks",
            type=int,
            default=None,
            help="at most this many chunks of the job queued or running at once",
        )
        parser.add_argument(
            "--wait", action="store_true", help="follow the job until it ends; non-zero exit unless it completes"
        )

    def handle(self, *args, definition_id: str, params: str, max_concurrent_chunks: int | None, wait: bool, **options):
        try:
            parameters = json.loads(params)
        except json.JSONDecodeError as error:
            raise CommandError(f"--params is not valid JSON: {error}") from None
        try:
            instance = start_job(
                definition_id,
                parameters,
                started_by=f"cli:{getpass.getuser()}",
                max_concurrent_chunks=max_concurrent_chunks,
            )
        except BatchError as error:
            raise CommandError(str(error)) from None
        except DatabaseError as error:  # PostgreSQL away (restarting, unreachable): one line, not a traceback
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise CommandError(f"no job started: the database is unavailable ({reason})") from None
        self.stdout.write(str(instance.id))
        if wait:
            self.follow(instance.id)

    def follow(self, instance_id) -> None:
        # The bar writes to the raw stream: Django's wrapper would end every redraw with a newline.
        try:
            instance = follow_job(instance_id, self.stderr._out)
        except BatchError as error:
            raise CommandError(str(error)) from None
        if instance.status != JobStatus.COMPLETED:
            raise CommandError(f"job {instance.id} {instance.status}: {instance.error_message or 'no message'}")
        self.stdout.write(
            f"COMPLETED: {instance.combined_records_processed} records"
            + (f", report {json.dumps(instance.report)}" if instance.report else "")
        )
