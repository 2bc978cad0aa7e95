"""Bulk Data routes; included by the project's URLs ahead of `fhirstore.urls`,
whose last route catches every other `/fhir` path."""

from django.urls import path

from fhirjobs.bulkexport import views
from fhirstore import converters  # noqa: F401  registers <fhirtype:> and <fhirid:>

urlpatterns = [
    path("fhir/$export", views.KickOffView.as_view(), name="bulkexport-system"),
    path("fhir/Patient/$export", views.PatientKickOffView.as_view(), name="bulkexport-patient"),
    path("fhir/Group/<fhirid:group_id>/$export", views.GroupKickOffView.as_view(), name="bulkexport-group"),
    path("fhir/$export-poll-status", views.ExportStatusView.as_view(), name="bulkexport-status"),
    path("fhir/$export-file/<str:file_id>", views.ExportFileView.as_view(), name="bulkexport-file"),
    path("fhir/$bulk-publish", views.PublishView.as_view(), name="bulkexport-publish"),
    path("fhir/$bulk-publish-file/<str:file_id>", views.PublishedFileView.as_view(), name="bulkexport-publish-file"),
]
