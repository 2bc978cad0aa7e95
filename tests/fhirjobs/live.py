"""A live Heavylift for tests that speak HTTP to it as outside clients do: gunicorn and a celery worker of a node
of their own, on the test database, started once per module (`live_server`)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

from batch.queues import work_notification_queue
from tests.processes import (
    Process,
    celery_worker,
    free_port,
    gunicorn,
    stop_all,
    subprocess_database_url,
    wait_until_serving,
)


class LiveServer:
    def __init__(self, processes: list[Process], **env: str):
        node, port = f"test-{uuid.uuid4().hex[:8]}", free_port()
        env = {"NODE_ID": node, "JOB_SCHEDULING": "false", "DATABASE_URL": subprocess_database_url(), **env}
        processes.append(celery_worker(env=env, queues=[work_notification_queue(node)], concurrency=1))
        # The Procfile's keep-alive: gunicorn's default (2 s) equals the status URLs' Retry-After, so a client that
        # waits as told reuses its connection just as the server closes it (reset, or no response at all).
        # No control socket: parallel test processes would share ~/.gunicorn/gunicorn.ctl.
        web = gunicorn(port, env, "--threads", "4", "--keep-alive", "10", "--no-control-socket")
        processes.append(web)
        wait_until_serving(web)
        self.base = f"http://127.0.0.1:{port}/fhir"


def live_server(django_db_blocker, **env: str) -> Iterator[LiveServer]:
    """For a module-scoped fixture (after `django_db_setup`): the server, stopped when the module is done."""
    started: list[Process] = []
    try:
        with django_db_blocker.unblock():
            yield LiveServer(started, **env)
    finally:
        stop_all(started)
