"""A real `celery worker` consumes this node's batch queue, named after its node and module."""

import uuid

import pytest

from batch.queues import pending_notifications, work_notification_queue
from heavylift.celery import ping
from tests.processes import celery_worker, inspect_worker

pytestmark = [pytest.mark.acceptance, pytest.mark.django_db(transaction=True)]


def unique_node() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


def test_worker_consumes_its_node_queue_by_default(processes, settings):
    node = unique_node()
    processes.append(celery_worker(env={"NODE_ID": node}))

    queue = work_notification_queue(node, settings.MODULE_ID)
    assert queue == f"batch2-work-notification-{node}-{settings.MODULE_ID}"
    result = ping.apply_async(args=["hello"], queue=queue).get(timeout=120)

    assert result["payload"] == "hello"
    assert result["node"] == node


def test_worker_consumes_the_period_form_when_the_setting_is_on(processes, settings):
    node = unique_node()
    processes.append(celery_worker(env={"NODE_ID": node, "REPLACE_HYPHENS_WITH_PERIODS": "true"}))

    settings.REPLACE_HYPHENS_WITH_PERIODS = True
    queue = work_notification_queue(node, settings.MODULE_ID)
    assert "-" not in queue.removeprefix("batch2")
    result = ping.apply_async(queue=queue).get(timeout=120)

    assert result["node"] == node


def test_a_node_does_not_consume_another_nodes_queue(processes, settings):
    mine, theirs = unique_node(), unique_node()
    processes.append(celery_worker(env={"NODE_ID": mine}))
    their_queue = work_notification_queue(theirs, settings.MODULE_ID)

    ping.apply_async(queue=their_queue)
    answered = ping.apply_async(queue=work_notification_queue(mine, settings.MODULE_ID)).get(timeout=120)

    assert answered["node"] == mine
    # Published before the answered one and still in its queue: nobody took it (not merely "no result yet").
    assert pending_notifications(their_queue) == 1


def test_batch_max_threads_sets_the_number_of_worker_processes(processes):
    """The Procfile's worker passes no --concurrency: BATCH_MAX_THREADS decides."""
    worker = celery_worker(env={"NODE_ID": unique_node(), "BATCH_MAX_THREADS": "3"}, concurrency=None, name="sized")
    processes.append(worker)
    hostname = worker.output().split(" ready.")[0].rsplit(" ", 1)[-1]

    assert len(inspect_worker(hostname, "stats")["pool"]["processes"]) == 3
