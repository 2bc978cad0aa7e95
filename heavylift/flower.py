"""Flower's entry point (`run_flower` execs it): Celery's own command line, with Flower's `/metrics` and
`/healthcheck` behind the same basic auth as its other pages (Flower leaves those two open to anyone who
reaches the port; the metrics name every task and worker), and every node's batch queue on its Broker page.

Flower's Broker page lists the queues its last inspection saw workers consume, else only the queues of its
own configuration: `default`, since the node queues are declared by the workers (heavylift.celery). It
inspects once, at its start, often before the workers are up, so the page showed `default` alone. The node
queues declared on the broker (`batch.queues.declared_work_notification_queues`) are added to whatever it
found, with their messages waiting, new work and work announced again together.
"""

from __future__ import annotations

import logging
import sys

from celery.bin.celery import main
from flower.views import BaseHandler, monitor
from tornado import web

from batch.queues import declared_work_notification_queues

logger = logging.getLogger(__name__)


def require_login() -> None:
    """Flower authenticates in `get_current_user` (401 on wrong or missing basic credentials): reading
    `current_user` before answering, as its other handlers do through `web.authenticated`, closes the two."""
    for handler in (monitor.Metrics, monitor.Healthcheck):
        handler.get = web.authenticated(handler.get)


def list_node_queues() -> None:
    """The Broker page's queues: Flower's own and every node queue declared on the broker."""
    flowers_own = BaseHandler.get_active_queue_names

    def get_active_queue_names(handler: BaseHandler) -> list[str]:
        try:
            node_queues = declared_work_notification_queues()
        except Exception:  # the broker away: the page says so itself, with Flower's own queues
            logger.warning("the node queues could not be read from the broker", exc_info=True)
            node_queues = []
        return sorted(set(flowers_own(handler)) | set(node_queues))

    BaseHandler.get_active_queue_names = get_active_queue_names


if __name__ == "__main__":
    require_login()
    list_node_queues()
    sys.exit(main())
