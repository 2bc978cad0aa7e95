"""Start-up checks of a cluster: settings every host must share, and export storage every host can serve.

A web process (at WSGI start-up) and a worker (once it consumes) compare themselves with the live batch
workers the database knows of (`batch.control.live_workers`):

- their settings fingerprints (`BATCH_SETTINGS_FINGERPRINT`, a short hash per cluster-wide setting, see the
  settings module): a difference is logged as a warning naming the settings and the workers that differ;
- with export files in a local `FileSystemStorage`, live workers on another host mean files one host writes
  that another cannot serve: logged loudly.

The same warnings are Django system checks (`heavylift.W001`, `heavylift.W002`, tagged `database`: `manage.py
check --database default` and `migrate` run them). Warnings, not refusals: a rolling restart that changes a
setting has old and new processes side by side for a while.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Iterable

from django.conf import settings
from django.core.checks import Tags, Warning, register
from django.core.files.storage import FileSystemStorage, storages
from django.db import DatabaseError

from batch.control import LiveWorker, live_workers

logger = logging.getLogger(__name__)


def settings_differences(own: str, workers: Iterable[LiveWorker]) -> list[str]:
    """One line per live worker whose settings fingerprint differs from `own`, naming the settings."""
    mine = _decoded(own)
    differences = []
    for worker in workers:
        theirs = _decoded(worker.settings_fingerprint)
        if not theirs or theirs == mine:
            continue  # a worker of a version that reports none is not told apart
        names = sorted(name for name in mine.keys() | theirs.keys() if mine.get(name) != theirs.get(name))
        differences.append(f"{worker.worker} (node {worker.node_id}) has other values of {', '.join(names)}")
    return differences


def hosts_of(workers: Iterable[LiveWorker]) -> set[str]:
    """The hosts of Celery hostnames `name@host/pid`."""
    return {worker.worker.partition("@")[2].rpartition("/")[0] for worker in workers} - {""}


def cluster_warnings() -> list[str]:
    """What this process finds wrong with the cluster it joins (its own settings against the live workers')."""
    workers = live_workers()
    warnings = []
    differences = settings_differences(settings.BATCH_SETTINGS_FINGERPRINT, workers)
    if differences:
        warnings.append(
            "settings that must be identical on every host differ from this process's: " + "; ".join(differences)
        )
    other_hosts = sorted(hosts_of(workers) - {socket.gethostname()})
    if isinstance(storages["bulkexport"], FileSystemStorage) and other_hosts:
        warnings.append(
            f"export files go to this host's file system (BULK_EXPORT_STORAGE_BACKEND "
            f"FileSystemStorage), but batch workers run on other hosts too ({', '.join(other_hosts)}): "
            "a file written on one host is 404 on the others. Use the database (the default) or an "
            "S3-compatible store"
        )
    return warnings


def warn_at_start(process: str) -> None:
    """Log every cluster warning loudly; a database that does not answer yet is no reason to stop."""
    try:
        warnings = cluster_warnings()
    except DatabaseError as error:
        logger.warning("%s: the cluster check could not run (%s)", process, error)
        return
    for warning in warnings:
        logger.warning("!!! %s on %s: %s", process, socket.gethostname(), warning)


@register(Tags.database)
def check_cluster(app_configs=None, databases=None, **kwargs) -> list[Warning]:
    if not databases:
        return []
    try:
        warnings = cluster_warnings()
    except DatabaseError:  # `migrate` checks before it creates the tables: nothing to compare with yet
        return []
    return [
        Warning(text, id="heavylift.W001" if text.startswith("settings") else "heavylift.W002") for text in warnings
    ]


def _decoded(fingerprint: str) -> dict[str, str]:
    try:
        decoded = json.loads(fingerprint) if fingerprint else {}
    except ValueError:
        return {"(unreadable fingerprint)": fingerprint}
    return decoded if isinstance(decoded, dict) else {"(unreadable fingerprint)": fingerprint}
