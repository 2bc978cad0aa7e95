"""The Celery app. Queues: `default`, and this node's batch queue (see `batch.queues`)."""

import os

from celery import Celery
from celery.signals import celeryd_init, task_postrun, task_prerun, worker_process_init, worker_ready
from kombu import Queue

from heavylift.broker import survive_lost_broker_connections
from heavylift.startup import settings_or_exit

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "heavylift.settings")
settings_or_exit()
survive_lost_broker_connections()

app = Celery("heavylift")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@celeryd_init.connect
def declare_queues(conf, **kwargs) -> None:
    """A worker consumes the default queue and its own node's batch queue unless `-Q` says otherwise.

    At `celeryd_init` Django is set up (the loader imported the apps), so the engine's modules can be
    imported; earlier, at `on_after_configure`, such an import fails and the signal swallows the error.
    """
    from batch.queues import work_notification_queue

    conf.task_queues = (Queue("default"), Queue(work_notification_queue()))


@worker_ready.connect
def check_the_cluster(sender=None, **kwargs) -> None:
    """Once consuming: warn of settings that differ from the live workers', and of export files on a local disk
    while workers run on other hosts (`heavylift.cluster`)."""
    from heavylift.cluster import warn_at_start

    warn_at_start(f"worker {getattr(sender, 'hostname', '')}")


@worker_process_init.connect
def connect_export_storage(**kwargs) -> None:
    """Each pool process sets up the export storage's client when it starts, not in the middle of an export
    (an object store's: 0.3-1 s on a loaded machine, which the first file a process wrote used to pay)."""
    from fhirjobs.bulkexport.files import connect_export_storage

    connect_export_storage()


@app.task(name="heavylift.ping", ignore_result=False)
def ping(payload: str = "pong") -> dict:
    """A round trip through broker and worker, used by `/healthz`-style probes and the demo."""
    from django.conf import settings

    return {"payload": payload, "node": settings.NODE_ID, "pid": os.getpid()}


@task_prerun.connect
@task_postrun.connect
def discard_unusable_connections(**kwargs) -> None:
    """Close this process's database connections that are closed, broken, or failed and no longer answer.

    Workers keep their connection across tasks (CELERY_DB_REUSE_MAX), so without this a connection the
    database dropped (a restart, a failover) would fail every later task of the process. Cheap on a
    healthy connection: only one that saw an error is pinged.
    """
    from django.db import connections

    for database in connections.all(initialized_only=True):
        raw = database.connection
        if raw is None or database.in_atomic_block:
            continue
        if raw.closed or raw.broken:
            database.close()
        elif database.errors_occurred:
            if database.is_usable():
                database.errors_occurred = False
            else:
                database.close()
