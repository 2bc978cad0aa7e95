"""`GET /metrics` for Prometheus (operators only) and the API request latency it shows.

Prometheus scrapes with a token that has the `control` scope (`Authorization: Bearer …`); a staff session may
look too. The engine's metrics are `batch.metrics`'; this adds how long the APIs take to answer. With
`PROMETHEUS_MULTIPROC_DIR` set, the counters of every gunicorn and Celery process are added up here.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from prometheus_client import REGISTRY, CollectorRegistry, Histogram, multiprocess
from prometheus_client.exposition import choose_encoder
from rest_framework.permissions import BasePermission, IsAuthenticated
from rest_framework.request import Request
from rest_framework.views import APIView

from batch.metrics import ClusterCollector
from jobsite.auth import is_operator

# The API a path belongs to, by its first segment; others (admin, static files) are not measured.
MEASURED_APIS = {"fhir": "fhir", "control": "control"}

request_duration = Histogram(
    "heavylift_http_request_duration_seconds",
    "Time to answer an API request, by API, method and status code",
    ["api", "method", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


class RequestLatencyMiddleware:
    """Times every request to the FHIR and control APIs."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        api = MEASURED_APIS.get(request.path.lstrip("/").split("/", 1)[0].split("$", 1)[0])
        if api is None:
            return self.get_response(request)
        started = time.perf_counter()
        response = self.get_response(request)
        request_duration.labels(api, request.method, str(response.status_code)).observe(time.perf_counter() - started)
        return response


def metrics_registry() -> CollectorRegistry:
    """Every process's values (multiprocess mode) or this process's, and the cluster's gauges, read now."""
    registry = CollectorRegistry()
    if settings.PROMETHEUS_MULTIPROC_DIR:
        multiprocess.MultiProcessCollector(registry, path=settings.PROMETHEUS_MULTIPROC_DIR)
    else:
        registry.register(_ThisProcess())
    registry.register(ClusterCollector())
    return registry


class _ThisProcess:
    """The default registry's metrics (this process's counters, its CPU and memory) inside another registry."""

    def collect(self):
        return REGISTRY.collect()


class IsOperator(BasePermission):
    message = "/metrics is for operators: a token with the `control` scope, or a staff session"

    def has_permission(self, request: Request, view) -> bool:
        return is_operator(request)


class MetricsView(APIView):
    """Operators only: 401 without credentials, 403 for a client's token or a session of a user not staff."""

    permission_classes = [IsAuthenticated, IsOperator]

    def get(self, request: Request) -> HttpResponse:
        encode, content_type = choose_encoder(request.META.get("HTTP_ACCEPT", ""))  # OpenMetrics when asked for
        return HttpResponse(encode(metrics_registry()), content_type=content_type)
