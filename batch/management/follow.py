"""A live progress bar for one job, shared by `start_job --wait` and `make demo`."""
from __future__ import annotations

import time
from typing import TextIO
from uuid import UUID

from django.core.management.base import CommandError
from tqdm import tqdm

from batch.coordinator import watch_job
from batch.models import JobInstance
from batch.progress import describe_duration


def follow_job(instance_id: UUID | str, out: TextIO, timeout: float | None = None) -> JobInstance:
    """Draw chunks done, records, rate and ETA until the job ends; return it as it ended."""
    deadline = time.monotonic() + timeout if timeout is not None else None
    with tqdm(total=1, unit="chunk", file=out, dynamic_ncols=True,
              bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} chunks [{elapsed}{postfix}]") as bar:
        for snapshot in watch_job(instance_id):
            figures = snapshot.figures
            bar.total = max(figures.chunks, 1)
            bar.n = figures.completed_chunks
            rate = f"{figures.records_per_second:.1f}" if figures.records_per_second else "-"
            bar.set_postfix_str(f"{snapshot.instance.status} {figures.combined_records_processed} records, "
                                f"{rate} rec/s, ETA {describe_duration(figures.estimated_seconds_remaining)}")
            if deadline is not None and time.monotonic() > deadline and not snapshot.ended:
                raise CommandError(f"job {instance_id} did not end within {timeout:.0f}s (is a worker running?)")
    return snapshot.instance
