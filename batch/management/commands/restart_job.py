from django.core.management.base import BaseCommand, CommandError

from batch.coordinator import restart_job
from batch.exceptions import BatchError


class Command(BaseCommand):
    help = "Restart a FAILED or CANCELLED job where it stopped (completed chunks stay done)."

    def add_arguments(self, parser):
        parser.add_argument("instance_id")

    def handle(self, *args, instance_id: str, **options):
        try:
            instance = restart_job(instance_id)
        except BatchError as error:
            raise CommandError(str(error)) from None
        self.stdout.write(f"{instance.id} {instance.status}")
