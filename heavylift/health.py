"""Liveness of the parts Heavylift cannot work without: PostgreSQL and Redis.

The answer is public, so it names the part that is down but not why: database error text can carry host
names, user names and file paths. The reason goes to the log."""

import logging

import redis
from django.conf import settings
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.http import require_GET

logger = logging.getLogger(__name__)


def check_services() -> dict[str, str]:
    """Return `{part: "ok" | "down"}` for the database and the broker; why a part is down is logged."""
    status = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        status["database"] = "ok"
    except Exception as exc:  # any failure means "down"
        logger.warning("healthz: the database is down: %s: %s", exc.__class__.__name__, exc)
        status["database"] = "down"
    try:
        client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
        client.ping()
        status["redis"] = "ok"
    except Exception as exc:
        logger.warning("healthz: redis is down: %s: %s", exc.__class__.__name__, exc)
        status["redis"] = "down"
    return status


@require_GET
def healthz(request):
    parts = check_services()
    down = sorted(name for name, state in parts.items() if state != "ok")
    body = {"status": "down" if down else "ok", "node": settings.NODE_ID, "parts": parts}
    if down:
        body["down"] = down
    return JsonResponse(body, status=503 if down else 200)
