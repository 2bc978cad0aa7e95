"""Flower's entry point (`run_flower` execs it): Celery's own command line, with Flower's `/metrics` and
`/healthcheck` behind the same basic auth as its other pages (Flower leaves those two open to anyone who
reaches the port; the metrics name every task and worker)."""
from __future__ import annotations

import sys

from celery.bin.celery import main
from flower.views import monitor
from tornado import web


def require_login() -> None:
    """Flower authenticates in `get_current_user` (401 on wrong or missing basic credentials): reading
    `current_user` before answering, as its other handlers do through `web.authenticated`, closes the two."""
    for handler in (monitor.Metrics, monitor.Healthcheck):
        handler.get = web.authenticated(handler.get)


if __name__ == "__main__":
    require_login()
    sys.exit(main())
