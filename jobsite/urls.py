from django.contrib import admin
from django.urls import include, path

from jobsite.health import healthz

urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", healthz, name="healthz"),
    # --- FHIR store ---
    path("", include("fhirstore.urls")),

    path("control/scripts", include("scheduling.urls")),
    path("", include("batch.urls")),  # the batch control API: /control/jobs
]
