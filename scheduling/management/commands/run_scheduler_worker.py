import os
import sys

from django.conf import settings
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = (
        "Start this node's scheduler worker: a Celery worker of SCHEDULER_THREAD_COUNT processes consuming only "
        "the scheduled-jobs queue (SCHEDULER_QUEUE). With JOB_SCHEDULING=false it stays up and takes nothing."
    )

    def add_arguments(self, parser):
        parser.add_argument("celery_args", nargs="*", help="more `celery worker` options, after `--`")

    def handle(self, *args, celery_args: list[str], **options):
        argv = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "heavylift",
            "worker",
            "--queues",
            settings.SCHEDULER_QUEUE,
            "--concurrency",
            str(settings.SCHEDULER_THREAD_COUNT),
            "--hostname",
            f"scheduler-{settings.NODE_ID}-{os.getpid()}@%h",
            "--loglevel",
            "INFO",
            *celery_args,
        ]
        os.execv(sys.executable, argv)
