from django.core.management.base import BaseCommand, CommandError

from batch import control


class Command(BaseCommand):
    help = "Cancel a job instance; a running step stops within about a second."

    def add_arguments(self, parser):
        parser.add_argument("instance_id")

    def handle(self, *args, instance_id: str, **options):
        try:
            job = control.cancel_job(instance_id)
        except control.BatchError as error:
            raise CommandError(str(error)) from None
        self.stdout.write(f"{job.id} {job.status}")
