"""The baseline the batch benchmark compares against: a plain Celery task that does nothing."""
from celery import shared_task


@shared_task(name="bench.noop", acks_late=True, ignore_result=True)
def noop(index: int) -> None:
    """Nothing: what remains is the cost of Celery and Redis themselves."""
