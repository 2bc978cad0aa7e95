"""Reindex routes; included by `fhirstore.urls` ahead of its generic type routes."""
from django.urls import path

from fhirstore.reindex import views

urlpatterns = [
    path("fhir/$reindex", views.ReindexView.as_view(), name="reindex-system"),
    path("fhir/<fhirtype:resource_type>/$reindex", views.ReindexView.as_view(), name="reindex-type"),
    path("fhir/<fhirtype:resource_type>/<fhirid:logical_id>/$reindex-dryrun", views.ReindexDryRunView.as_view(),
         name="reindex-dryrun"),
]
