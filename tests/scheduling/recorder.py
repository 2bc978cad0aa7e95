"""Jobs started in real processes write one JSON line per run here, so a test can count who ran what."""

from __future__ import annotations

import json
import os
from pathlib import Path

from django.conf import settings

from scheduling import current_run

RECORD_FILE = "SCHEDULING_TEST_RECORD"  # environment variable naming the file, set by the test


def record_run(**extra: object) -> None:
    run = current_run()
    line = json.dumps(
        {
            "job": run.job_name,
            "tick": run.tick.isoformat(),
            "clustered": run.clustered,
            "node": settings.NODE_ID,
            "pid": os.getpid(),
            **extra,
        }
    )
    with open(os.environ[RECORD_FILE], "a") as out:  # O_APPEND: whole short lines from many processes
        out.write(line + "\n")


def read_runs(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
