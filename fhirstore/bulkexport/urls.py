"""Bulk Data routes; included by `fhirstore.urls` ahead of its generic type routes."""
from django.urls import path

from fhirstore.bulkexport import views

urlpatterns = [
    path("fhir/$export", views.KickOffView.as_view(), name="bulkexport-system"),
    path("fhir/Patient/$export", views.PatientKickOffView.as_view(), name="bulkexport-patient"),
    path("fhir/Group/<fhirid:group_id>/$export", views.GroupKickOffView.as_view(), name="bulkexport-group"),
    path("fhir/$export-poll-status", views.ExportStatusView.as_view(), name="bulkexport-status"),
    path("fhir/$export-file/<str:file_id>", views.ExportFileView.as_view(), name="bulkexport-file"),
]
