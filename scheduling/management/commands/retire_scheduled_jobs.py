from django.core.management.base import BaseCommand

from scheduling.registry import registry
from scheduling.sync import retire_undeclared_jobs


class Command(BaseCommand):
    help = (
        "Disable the scheduled jobs this release no longer declares in code. The last step of an upgrade, once "
        "every process runs the new release (a starting process only adds and updates jobs; see README, "
        "Upgrading)."
    )

    def handle(self, *args, **options):
        report = retire_undeclared_jobs(registry.all())
        for name in report.disabled:
            self.stdout.write(f"disabled {name}: no longer declared in code")
        self.stdout.write(f"{len(report.disabled)} scheduled jobs retired")
