from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from heavylift.health import healthz
from heavylift.metrics import MetricsView

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="admin:index"), name="home"),  # the operations view opens at /
    path("admin/", admin.site.urls),
    path("healthz", healthz, name="healthz"),
    path("metrics", MetricsView.as_view(), name="metrics"),  # Prometheus, operators only
    path("", include("batch.urls")),  # the batch control API: /control/jobs
    path("control/scripts", include("scheduling.urls")),
    # The FHIR jobs' operations go ahead of the FHIR API, whose last route catches every other /fhir path.
    path("", include("fhirjobs.bulkexport.urls")),  # $export
    path("", include("fhirjobs.bulkimport.urls")),  # $import, $bulk-submit
    path("", include("fhirjobs.reindex.urls")),  # $reindex, $reindex-dryrun
    path("", include("fhirjobs.deleteexpunge.urls")),  # $delete-expunge, $delete-expunge-status
    path("", include("fhirjobs.expunge.urls")),  # $expunge (previous versions), $expunge-status
    path("", include("fhirjobs.merge.urls")),  # Patient/$merge, $hapi.fhir.replace-references
    path("", include("fhirjobs.bulkpatch.urls")),  # $hapi.fhir.bulk-patch, $hapi.fhir.bulk-patch-status
    path("", include("fhirjobs.terminology.urls")),  # $upload-external-code-system
    path("", include("fhirstore.urls")),  # the FHIR API: /fhir
]
