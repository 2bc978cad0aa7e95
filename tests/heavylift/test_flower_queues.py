"""Flower's Broker page lists every node's batch queue, not only `default` (issue #24): in-process, no Flower."""

from __future__ import annotations

import uuid
from types import SimpleNamespace

import pytest
import redis
from django.conf import settings
from flower.views import BaseHandler
from kombu import Connection, Exchange, Queue

from batch.queues import PRIORITY_SEPARATOR, declared_work_notification_queues, work_notification_queue
from heavylift import flower


def declare(queue: str) -> None:
    """As a Celery worker declares the queues it consumes (heavylift.celery): bound to the default exchange."""
    with Connection(settings.CELERY_BROKER_URL) as connection:
        Queue(queue, Exchange("default"), routing_key="default").bind(connection.default_channel).declare()


@pytest.fixture
def declared_node_queue():
    """A node queue of the test's own declared on the broker, its binding removed afterwards."""
    queue = work_notification_queue(f"flower-{uuid.uuid4().hex[:8]}", settings.MODULE_ID)
    declare(queue)
    yield queue
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    for bindings in broker.scan_iter(match="_kombu.binding*.default"):
        broker.srem(bindings, f"default{PRIORITY_SEPARATOR}{PRIORITY_SEPARATOR}{queue}")
    broker.close()


def test_the_node_queues_declared_on_the_broker_are_found_and_nothing_else(declared_node_queue):
    declare("default")

    found = declared_work_notification_queues()

    assert declared_node_queue in found and "default" not in found


def test_flowers_broker_page_asks_for_its_own_queues_and_every_node_queue(declared_node_queue, monkeypatch):
    monkeypatch.setattr(BaseHandler, "get_active_queue_names", BaseHandler.get_active_queue_names)  # undone after
    before_any_inspection = SimpleNamespace(
        application=SimpleNamespace(workers={}),
        capp=SimpleNamespace(conf=SimpleNamespace(task_default_queue="default", task_queues=None)),
    )
    assert BaseHandler.get_active_queue_names(before_any_inspection) == ["default"], "Flower alone: default only"

    flower.list_node_queues()

    names = BaseHandler.get_active_queue_names(before_any_inspection)
    assert "default" in names and declared_node_queue in names
