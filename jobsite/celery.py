"""The Celery app. Queues: `default`, and this node's batch queue (see `batch.control.work_notification_queue`)."""
import os

from celery import Celery
from celery.signals import celeryd_init
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "jobsite.settings")

app = Celery("jobsite")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@celeryd_init.connect
def declare_queues(sender: str, conf, **kwargs) -> None:
    """A worker consumes the default queue and its own node's batch queue unless `-Q` says otherwise.

    Sent once Django is set up and before the worker picks its queues: `batch.control` needs the app
    registry, which `on_after_configure` (sent on the first read of the configuration) runs too early for.
    """
    from batch.control import work_notification_queue

    conf.task_queues = (Queue("default"), Queue(work_notification_queue()))


@app.task(name="heavylift.ping", ignore_result=False)
def ping(payload: str = "pong") -> dict:
    """A round trip through broker and worker, used by `/healthz`-style probes and the demo."""
    from django.conf import settings

    return {"payload": payload, "node": settings.NODE_ID, "pid": os.getpid()}
