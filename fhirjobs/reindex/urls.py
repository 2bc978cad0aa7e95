"""Reindex routes; included by the project's URLs ahead of `fhirstore.urls`,
whose last route catches every other `/fhir` path."""

from django.urls import path

from fhirjobs.reindex import views
from fhirstore import converters  # noqa: F401  registers <fhirtype:> and <fhirid:>

urlpatterns = [
    path("fhir/$reindex", views.ReindexView.as_view(), name="reindex-system"),
    path("fhir/<fhirtype:resource_type>/$reindex", views.ReindexView.as_view(), name="reindex-type"),
    path(
        "fhir/<fhirtype:resource_type>/<fhirid:logical_id>/$reindex-dryrun",
        views.ReindexDryRunView.as_view(),
        name="reindex-dryrun",
    ),
]
