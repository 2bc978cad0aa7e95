import os
import sys

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = (
        "Start Flower on this node's broker, on BIND_ADDRESS, behind basic auth from FLOWER_USER / "
        "FLOWER_PASSWORD (its /metrics and /healthcheck too)."
    )

    def handle(self, *args, **options):
        if not settings.FLOWER_PASSWORD:
            raise CommandError("FLOWER_PASSWORD is not set: Flower never runs without credentials")
        # The same interface as the web process (BIND_ADDRESS): only this machine unless told otherwise.
        argv = [
            sys.executable,
            "-m",
            "heavylift.flower",
            "-A",
            "heavylift",
            "flower",
            f"--port={settings.FLOWER_PORT}",
            f"--address={settings.BIND_ADDRESS}",
        ]
        # The credentials go through Flower's environment, not its command line: anyone on the machine can read
        # a process's arguments (`ps`), only its owner its environment.
        env = {name: value for name, value in os.environ.items() if name != "FLOWER_PASSWORD"}
        env["FLOWER_BASIC_AUTH"] = f"{settings.FLOWER_USER}:{settings.FLOWER_PASSWORD}"
        os.execve(sys.executable, argv, env)
