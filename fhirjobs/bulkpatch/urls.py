"""Bulk patch routes; included by the project's URLs ahead of `fhirstore.urls`, whose last route catches every
other `/fhir` path."""

from django.urls import path

from fhirjobs.bulkpatch import views

urlpatterns = [
    path("fhir/$hapi.fhir.bulk-patch", views.BulkPatchView.as_view(), name="bulk-patch"),
    path("fhir/$hapi.fhir.bulk-patch-status", views.BulkPatchStatusView.as_view(), name="bulk-patch-status"),
]
