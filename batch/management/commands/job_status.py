import json

from django.core.management.base import BaseCommand, CommandError

from batch.control import BatchError, describe_duration, get_job
from batch.serializers import JobDetailSerializer


class Command(BaseCommand):
    help = "Show one job instance; --json prints the control API's representation."

    def add_arguments(self, parser):
        parser.add_argument("instance_id")
        parser.add_argument(
            "--json", action="store_true", dest="as_json", help="the control API's representation of the instance"
        )

    def handle(self, *args, instance_id: str, as_json: bool, **options):
        try:
            instance = get_job(instance_id)
        except BatchError as error:
            raise CommandError(str(error)) from None
        shown = JobDetailSerializer(instance).data
        if as_json:
            self.stdout.write(json.dumps(shown, indent=2))
            return
        rate = f"{instance.records_per_second:.1f} records/s" if instance.records_per_second else "rate unknown"
        self.stdout.write(f"{instance.id}  {instance.definition_id} v{instance.definition_version}  {instance.status}")
        timing = (
            f"took {describe_duration(instance.elapsed_seconds)}"
            if instance.ended
            else f"ETA {describe_duration(instance.estimated_seconds_remaining)}"
        )
        self.stdout.write(
            f"  progress {instance.progress:.0%}, {instance.combined_records_processed} records, {rate}, {timing}"
        )
        self.stdout.write(
            f"  started {instance.start_time or '-'} by {instance.started_by or '-'}, "
            f"ended {instance.end_time or '-'}, errors {instance.error_count}"
        )
        if instance.error_message:
            self.stdout.write(f"  error: {instance.error_message}")
        for step in shown["steps"]:
            counts = ", ".join(f"{status} {count}" for status, count in sorted(step["chunks"].items()))
            self.stdout.write(f"  step {step['stepId']}: {counts or 'no chunks'}")
