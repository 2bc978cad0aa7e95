"""Start-up checks of a cluster: settings that must match on every host, and export files on a local disk
while workers run on other hosts."""

from __future__ import annotations

import logging
import socket

import pytest
from django.db import connection

from batch.heartbeats import live_workers, record_heartbeat
from heavylift.cluster import check_cluster, cluster_warnings, warn_at_start
from heavylift.settings import settings_fingerprint

pytestmark = pytest.mark.django_db

BASE = {
    "BULK_IMPORT_ALLOWED_SOURCES": ["https://data.example.org/"],
    "BULK_IMPORT_FILE_ROOT": "/data",
    "BULK_EXPORT_STORAGE_BACKEND": "blobstore.storage.DatabaseStorage",
}


def beat_as(settings, worker: str, **values) -> None:
    """A worker (of another host, say) records its heartbeat with the fingerprint of these settings."""
    own = settings.BATCH_SETTINGS_FINGERPRINT
    settings.BATCH_SETTINGS_FINGERPRINT = settings_fingerprint({**BASE, **values})
    record_heartbeat(worker, "node-b")
    settings.BATCH_SETTINGS_FINGERPRINT = own


def test_a_heartbeat_carries_the_workers_settings_fingerprint(settings):
    settings.BATCH_SETTINGS_FINGERPRINT = settings_fingerprint(BASE)

    record_heartbeat("celery@host-b/7")

    [worker] = live_workers()
    assert (worker.worker, worker.settings_fingerprint) == ("celery@host-b/7", settings_fingerprint(BASE))
    assert "data.example.org" not in worker.settings_fingerprint, "values are hashed, never stored"


def test_workers_with_the_same_settings_raise_no_warning(settings):
    settings.BATCH_SETTINGS_FINGERPRINT = settings_fingerprint(BASE)
    beat_as(settings, "celery@host-b/7")

    assert cluster_warnings() == []
    assert check_cluster(databases=["default"]) == []


def test_a_worker_with_other_settings_is_named_with_the_settings_that_differ(settings):
    settings.BATCH_SETTINGS_FINGERPRINT = settings_fingerprint(BASE)
    beat_as(settings, "celery@host-b/7", BULK_IMPORT_ALLOWED_SOURCES=[], BULK_IMPORT_FILE_ROOT="/elsewhere")
    beat_as(settings, "celery@host-c/8")

    [warning] = cluster_warnings()

    assert (
        "celery@host-b/7 (node node-b) has other values of BULK_IMPORT_ALLOWED_SOURCES, BULK_IMPORT_FILE_ROOT"
        in warning
    )
    assert "host-c" not in warning
    [check] = check_cluster(databases=["default"])
    assert check.id == "heavylift.W001" and check.msg == warning


def test_export_files_on_a_local_disk_while_workers_run_on_another_host_are_a_loud_warning(settings, tmp_path, caplog):
    settings.STORAGES = {
        **settings.STORAGES,
        "bulkexport": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path)},
        },
    }
    record_heartbeat(f"celery@{socket.gethostname()}/7")
    assert cluster_warnings() == [], "workers of this host only: the file system serves them all"

    record_heartbeat("celery@host-b/8")
    with caplog.at_level(logging.WARNING, logger="heavylift.cluster"):
        warn_at_start("web")

    [check] = check_cluster(databases=["default"])
    assert check.id == "heavylift.W002" and "batch workers run on other hosts too (host-b)" in check.msg
    assert f"!!! web on {socket.gethostname()}: export files go to this host's file system" in caplog.text


def test_the_database_storage_raises_no_warning_whatever_the_hosts():
    record_heartbeat("celery@host-b/8")

    assert [warning for warning in cluster_warnings() if "file system" in warning] == []


def test_the_check_needs_the_database_and_runs_only_when_asked_with_it(settings):
    settings.BATCH_SETTINGS_FINGERPRINT = settings_fingerprint(BASE)
    beat_as(settings, "celery@host-b/7", BULK_IMPORT_FILE_ROOT="/elsewhere")

    assert check_cluster(databases=None) == []


@pytest.mark.django_db(transaction=True)
def test_migrate_on_an_empty_database_runs_the_check_before_the_tables_exist():
    """`migrate` runs the database checks first: with no heartbeat table yet the check finds nothing to say."""
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE batch_workerheartbeat RENAME TO batch_workerheartbeat_away")
    try:
        assert check_cluster(databases=["default"]) == []
    finally:
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE batch_workerheartbeat_away RENAME TO batch_workerheartbeat")
