from django.core.management.base import BaseCommand, CommandError

from batch.control import JobStatus, list_jobs


class Command(BaseCommand):
    help = "List job instances, newest first."

    def add_arguments(self, parser):
        parser.add_argument("--status", action="append", default=[], help=f"one of {', '.join(JobStatus)}; repeatable")
        parser.add_argument("--limit", type=int, default=20)

    def handle(self, *args, status: list[str], limit: int, **options):
        unknown = sorted(set(status) - set(JobStatus))
        if unknown:
            raise CommandError(f"unknown status {', '.join(unknown)}; use one of {', '.join(JobStatus)}")
        for instance in list_jobs(status)[:limit]:
            self.stdout.write(
                f"{instance.id}  {instance.status:<11}  {instance.progress:>4.0%}  "
                f"{instance.combined_records_processed:>10} records  "
                f"{instance.create_time:%Y-%m-%d %H:%M:%S}  {instance.definition_id}"
            )
