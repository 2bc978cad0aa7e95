"""Liveness of the parts Heavylift cannot work without: PostgreSQL and Redis."""
import redis
from django.conf import settings
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.http import require_GET


def check_services() -> dict[str, str]:
    """Return `{part: "ok" | "down: <reason>"}` for the database and the broker."""
    status = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        status["database"] = "ok"
    except Exception as exc:  # any failure means "down"; the reason is reported
        status["database"] = f"down: {exc.__class__.__name__}: {exc}".strip()[:200]
    try:
        client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
        client.ping()
        status["redis"] = "ok"
    except Exception as exc:
        status["redis"] = f"down: {exc.__class__.__name__}: {exc}".strip()[:200]
    return status


@require_GET
def healthz(request):
    parts = check_services()
    down = sorted(name for name, state in parts.items() if state != "ok")
    body = {"status": "down" if down else "ok", "node": settings.NODE_ID, "parts": parts}
    if down:
        body["down"] = down
    return JsonResponse(body, status=503 if down else 200)
