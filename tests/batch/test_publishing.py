"""The Celery publisher against a real Redis: a publish that fails (the broker is down) is logged, not raised;
the chunk stays QUEUED, and maintenance announces it again once the broker is back."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
import redis
from celery import current_app
from django.conf import settings as django_settings
from django.utils import timezone

from batch.control import start_job
from batch.maintenance import run_maintenance_pass
from batch.models import WorkChunk
from batch.queues import work_notification_queue
from batch.statuses import ChunkStatus
from tests.batch.helpers import unique_node
from tests.processes import free_port

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_failed_publish_is_logged_not_raised_and_maintenance_announces_the_chunk_again(settings, monkeypatch, caplog):
    node = unique_node()
    queue = work_notification_queue(node, settings.MODULE_ID)
    broker = redis.Redis.from_url(django_settings.CELERY_BROKER_URL)
    with monkeypatch.context() as broker_down:  # the app's connections go to a port nothing listens on
        broker_down.setattr(current_app.conf, "broker_url", f"redis://127.0.0.1:{free_port()}/0")
        broker_down.setattr(current_app, "_pool", None)
        broker_down.setattr(current_app.amqp, "_producer_pool", None)
        with caplog.at_level(logging.ERROR, logger="django.db.backends.base"):
            instance = start_job("DIAGNOSTIC_NOOP", {"chunks": 1}, node_id=node)  # no exception: the job started

    assert "Error calling announce" in caplog.text and "Connection refused" in caplog.text
    chunk = WorkChunk.objects.get(instance_id=instance.id)
    assert chunk.status == ChunkStatus.QUEUED
    assert broker.llen(queue) == 0

    settings.BATCH_REANNOUNCE_AFTER_SECONDS = 1
    WorkChunk.objects.filter(id=chunk.id).update(announced_at=timezone.now() - timedelta(seconds=10))
    try:
        assert run_maintenance_pass().reannounced == 1
        assert broker.llen(queue) == 1, "announced again, now that the broker answers"
    finally:
        broker.delete(queue)
