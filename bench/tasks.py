"""CPU-bound Celery work that keeps the batch workers busy during `bench_scheduling` (loaded with `-I bench.tasks`)."""
import time

from celery import shared_task


@shared_task(name="bench.burn_cpu", ignore_result=True)
def burn_cpu(seconds: float) -> None:
    deadline = time.process_time() + seconds
    while time.process_time() < deadline:
        pass
