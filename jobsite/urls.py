from django.contrib import admin
from django.urls import include, path

from jobsite.health import healthz

urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", healthz, name="healthz"),
    path("", include("batch.urls")),  # the batch control API: /control/jobs
    path("control/scripts", include("scheduling.urls")),
    path("", include("fhirjobs.terminology.urls")),  # $upload-external-code-system, ahead of the type routes
    path("", include("fhirstore.urls")),  # the FHIR API: /fhir
]
