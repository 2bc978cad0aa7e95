from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from jobsite.health import healthz
from jobsite.metrics import MetricsView

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="admin:index"), name="home"),  # the operations view opens at /
    path("admin/", admin.site.urls),
    path("healthz", healthz, name="healthz"),
    path("metrics", MetricsView.as_view(), name="metrics"),  # Prometheus, operators only
    path("", include("batch.urls")),  # the batch control API: /control/jobs
    path("control/scripts", include("scheduling.urls")),
    path("", include("fhirstore.urls")),  # the FHIR API: /fhir
]
