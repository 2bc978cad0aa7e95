"""The Celery app. Queues: `default`, and this node's batch queue (see `batch.queues`)."""
import os

from celery import Celery
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "jobsite.settings")

app = Celery("jobsite")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@app.on_after_configure.connect
def declare_queues(sender: Celery, **kwargs) -> None:
    """A worker consumes the default queue and its own node's batch queue unless `-Q` says otherwise."""
    from batch.queues import work_notification_queue

    sender.conf.task_queues = (Queue("default"), Queue(work_notification_queue()))


@app.task(name="heavylift.ping", ignore_result=False)
def ping(payload: str = "pong") -> dict:
    """A round trip through broker and worker, used by `/healthz`-style probes and the demo."""
    from django.conf import settings

    return {"payload": payload, "node": settings.NODE_ID, "pid": os.getpid()}
